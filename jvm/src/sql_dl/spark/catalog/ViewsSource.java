package sql_dl.spark.catalog;

import java.io.IOException;
import java.sql.Timestamp;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

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
 * {@code sql_dl_views}: one row per image view, with its catalog's state as each query reads
 * it (not a snapshot of bootstrap's): how many files and folders it holds, when it was last
 * brought up to date and how long that took, and whether it is being built. The option
 * {@code views} is JSON: each view's name and its {@link CatalogSource} options.
 */
public final class ViewsSource implements RelationProvider {

  static final StructType SCHEMA = new StructType(new StructField[] {
      DataTypes.createStructField("view", DataTypes.StringType, false),
      DataTypes.createStructField("path", DataTypes.StringType, false),
      DataTypes.createStructField("state", DataTypes.StringType, false),
      DataTypes.createStructField("files", DataTypes.LongType, true),
      DataTypes.createStructField("folders", DataTypes.LongType, true),
      DataTypes.createStructField("segments", DataTypes.LongType, true),
      DataTypes.createStructField("last_refresh", DataTypes.TimestampType, true),
      DataTypes.createStructField("refresh_ms", DataTypes.LongType, true),
      DataTypes.createStructField("listing", DataTypes.StringType, false),
      DataTypes.createStructField("catalog", DataTypes.StringType, false),
      DataTypes.createStructField("problem", DataTypes.StringType, true)});
  private static final ObjectMapper JSON = new ObjectMapper();

  @Override
  public BaseRelation createRelation(SQLContext sqlContext,
                                     scala.collection.immutable.Map<String, String> options) {
    String views = options.get("views").getOrElse(() -> "{}");
    Map<String, Map<String, String>> parsed;
    try {
      parsed = JSON.readValue(views, new TypeReference<Map<String, Map<String, String>>>() {});
    } catch (IOException e) {
      throw new IllegalArgumentException("sql_dl_views: the option views is not JSON", e);
    }
    return new Views(sqlContext, parsed);
  }

  static final class Views extends SystemViewRelation {
    private final Map<String, Map<String, String>> views;

    Views(SQLContext sqlContext, Map<String, Map<String, String>> views) {
      super(sqlContext, SCHEMA);
      this.views = views;
    }

    @Override
    protected List<Row> rows() {
      SQLContext sqlContext = sqlContext();
      List<Row> rows = new ArrayList<>();
      for (Map.Entry<String, Map<String, String>> view : new java.util.TreeMap<>(views).entrySet()) {
        Map<String, String> options = new HashMap<>(view.getValue());
        ImageCatalog catalog = ImageCatalog.of(sqlContext.sparkSession(),
            CatalogSource.spec(sqlContext.sparkSession(), options));
        Map<String, Object> d = catalog.describe();
        Object refreshed = d.get("refreshed");
        rows.add(RowFactory.create(view.getKey(), d.get("path"), d.get("state"), d.get("files"),
            d.get("folders"), d.get("segments"),
            refreshed == null ? null : new Timestamp((Long) refreshed), d.get("refresh_ms"),
            Boolean.TRUE.equals(d.get("full_listing")) ? "full" : "changed folders",
            d.get("catalog"), d.get("problem")));
      }
      return rows;
    }
  }
}
