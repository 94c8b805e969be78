package sql_dl.spark;

import java.util.List;

import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SQLContext;
import org.apache.spark.sql.sources.BaseRelation;
import org.apache.spark.sql.sources.TableScan;
import org.apache.spark.sql.types.StructType;

/**
 * The relation of a system view whose rows the driver computes as each query reads it
 * ({@code sql_dl_views}, {@code sql_dl_indexes}): {@link #rows} in one partition.
 */
public abstract class SystemViewRelation extends BaseRelation implements TableScan {

  private final SQLContext sqlContext;
  private final StructType schema;

  protected SystemViewRelation(SQLContext sqlContext, StructType schema) {
    this.sqlContext = sqlContext;
    this.schema = schema;
  }

  /** The view's rows now. */
  protected abstract List<Row> rows();

  @Override
  public SQLContext sqlContext() {
    return sqlContext;
  }

  @Override
  public StructType schema() {
    return schema;
  }

  @Override
  public RDD<Row> buildScan() {
    return JavaSparkContext.fromSparkContext(sqlContext.sparkContext())
        .parallelize(rows(), 1).rdd();
  }
}
