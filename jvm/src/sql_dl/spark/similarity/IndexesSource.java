package sql_dl.spark.similarity;

import java.io.IOException;
import java.sql.Timestamp;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SQLContext;
import org.apache.spark.sql.sources.BaseRelation;
import org.apache.spark.sql.sources.RelationProvider;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import sql_dl.spark.SystemViewRelation;

/**
 * {@code sql_dl_indexes}: one row per embedding index, as each query reads it: its view,
 * function and metric, its state ({@code new}, {@code building}, {@code updating},
 * {@code ready}, {@code failed}), the images with a vector and those listed, the images being
 * embedded, the last update and how long it took, the memory the service holds for it, its
 * folder and its last problem. The option {@code indexes} is JSON: each index's name and
 * folder, as {@link IndexFunction#register} made them.
 */
public final class IndexesSource implements RelationProvider {

  static final StructType SCHEMA = new StructType(new StructField[] {
      DataTypes.createStructField("index", DataTypes.StringType, false),
      DataTypes.createStructField("view", DataTypes.StringType, true),
      DataTypes.createStructField("function", DataTypes.StringType, true),
      DataTypes.createStructField("metric", DataTypes.StringType, true),
      DataTypes.createStructField("dimensions", DataTypes.IntegerType, true),
      DataTypes.createStructField("state", DataTypes.StringType, false),
      DataTypes.createStructField("images", DataTypes.LongType, true),
      DataTypes.createStructField("listed", DataTypes.LongType, true),
      DataTypes.createStructField("pending", DataTypes.LongType, true),
      DataTypes.createStructField("last_update", DataTypes.TimestampType, true),
      DataTypes.createStructField("update_ms", DataTypes.LongType, true),
      DataTypes.createStructField("memory_bytes", DataTypes.LongType, true),
      DataTypes.createStructField("directory", DataTypes.StringType, true),
      DataTypes.createStructField("problem", DataTypes.StringType, true)});
  private static final ObjectMapper JSON = new ObjectMapper();

  @Override
  public BaseRelation createRelation(SQLContext sqlContext,
                                     scala.collection.immutable.Map<String, String> options) {
    String text = options.get("indexes").getOrElse(() -> "{}");
    try {
      return new Indexes(sqlContext,
          JSON.readValue(text, new TypeReference<Map<String, String>>() {}));
    } catch (IOException e) {
      throw new IllegalArgumentException("sql_dl_indexes: the option indexes is not JSON", e);
    }
  }

  static final class Indexes extends SystemViewRelation {
    private final Map<String, String> indexes;

    Indexes(SQLContext sqlContext, Map<String, String> indexes) {
      super(sqlContext, SCHEMA);
      this.indexes = indexes;
    }

    @Override
    protected List<Row> rows() {
      List<Row> rows = new ArrayList<>();
      for (Map.Entry<String, String> e : new TreeMap<>(indexes).entrySet()) {
        SimilarityIndex index = SimilarityIndex.at(e.getValue());
        if (index == null) {
          rows.add(RowFactory.create(e.getKey(), null, null, null, null, "not registered", null,
              null, null, null, null, null, e.getValue(), null));
          continue;
        }
        Map<String, Object> d = index.describe();
        Object updated = d.get("updated");
        rows.add(RowFactory.create(e.getKey(), index.view, index.function, index.metric,
            index.dims, d.get("state"), d.get("images"), d.get("listed"), d.get("pending"),
            updated == null ? null : new Timestamp((Long) updated), d.get("update_ms"),
            d.get("memory"), index.directory, d.get("problem")));
      }
      return rows;
    }
  }
}
