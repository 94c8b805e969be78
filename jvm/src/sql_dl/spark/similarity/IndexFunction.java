package sql_dl.spark.similarity;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.AttributeReference;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.ExpressionInfo;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.expressions.NamedExpression;
import org.apache.spark.sql.catalyst.plans.logical.LocalRelation;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.OneRowRelation;
import org.apache.spark.sql.catalyst.plans.logical.Project;
import org.apache.spark.sql.catalyst.util.ArrayData;
import org.apache.spark.sql.classic.Dataset;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.BinaryType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.Metadata;
import org.apache.spark.sql.types.MetadataBuilder;
import org.apache.spark.sql.types.NumericType;
import org.apache.spark.sql.types.StringType;
import org.apache.spark.unsafe.types.UTF8String;
import scala.Option;
import scala.Tuple3;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;
import sql_dl.spark.access.AccessPolicy;

/**
 * An index's SQL table function, {@code <index>(query, k)}: the {@code k} images of the
 * index's view nearest to {@code query} (an image's bytes, the path of an image of the view,
 * or a vector), as {@code path, label, distance}, nearest first.
 *
 * <p>It is answered as Spark analyses the statement, on the driver: the index is brought up
 * to date with its view ({@link SimilarityIndex#update}), the query's vector is found (the
 * index's own for a path; the function run on the image's bytes, in one short job; the
 * vector itself), and the {@link IndexService} searches. The plan is a local relation of the
 * rows, so the statement runs no Spark job of its own. The {@code path} column's metadata
 * names the index, its view and the query ({@code sql_dl_index}, {@code sql_dl_view},
 * {@code sql_dl_query}: a path, {@code "image"} or {@code "vector"}; an image's thumbnail,
 * {@code sql_dl_query_thumbnail}), which {@code sql_dl.show} reads to show the query beside
 * its neighbours.
 */
public final class IndexFunction extends AbstractFunction1<Seq<Expression>, LogicalPlan> {

  public static final int DEFAULT_K = 10;
  public static final int MAX_K = 1000;
  private static final ObjectMapper JSON = new ObjectMapper();

  private final SimilarityIndex index;

  private IndexFunction(SimilarityIndex index) {
    this.index = index;
  }

  /**
   * Registers the table function of each index of {@code specs} (a JSON list, from
   * {@code sql_dl.driver.indexes}) in {@code session}, whose image views and functions must
   * be registered already. Each index starts following its view in the background. Returns
   * each index's folder (JSON), for {@link IndexesSource}.
   */
  public static String register(SparkSession session, String specs) throws IOException {
    org.apache.spark.sql.classic.SparkSession classic =
        (org.apache.spark.sql.classic.SparkSession) session;
    java.util.Map<String, String> folders = new java.util.LinkedHashMap<>();
    for (JsonNode spec : JSON.readTree(specs)) {
      SimilarityIndex index = SimilarityIndex.of(session, spec);
      String name = index.name;
      ExpressionInfo info = new ExpressionInfo(IndexFunction.class.getName(), null, name,
          spec.get("usage").asText(), spec.get("arguments").asText(),
          spec.get("examples").asText(), "", "", "", "", "java_udf");
      FunctionIdentifier identifier = temporary(name);
      IndexFunction builder = new IndexFunction(index);
      classic.sessionState().tableFunctionRegistry().dropFunction(identifier);
      classic.sessionState().tableFunctionRegistry().registerFunction(identifier, info, builder);
      index.updateInBackground();
      folders.put(name, index.directory);
    }
    return JSON.writeValueAsString(folders);
  }

  /**
   * Makes every session created from now on (the Thrift Server's, one per connection) have
   * the table functions {@code names} (a JSON list) of {@code session}, in place of those an
   * earlier call injected. Spark offers no public way to take an injected function back: the
   * buffer is a private field of {@code SparkSessionExtensions} (checked on 4.3.0).
   */
  public static void inject(SparkSession session, String names)
      throws IOException, ReflectiveOperationException {
    org.apache.spark.sql.classic.SparkSession classic =
        (org.apache.spark.sql.classic.SparkSession) session;
    Object extensions = classic.extensions();
    for (java.lang.reflect.Field field : extensions.getClass().getDeclaredFields()) {
      if (field.getName().endsWith("injectedTableFunctions")) {
        field.setAccessible(true);
        ((scala.collection.mutable.Buffer<?>) field.get(extensions)).clear();
      }
    }
    var registry = classic.sessionState().tableFunctionRegistry();
    for (JsonNode name : JSON.readTree(names)) {
      FunctionIdentifier identifier = temporary(name.asText());
      // as Spark's own (unqualified): sessions register injected functions with the built-ins
      classic.extensions().injectTableFunction(new Tuple3<>(
          new FunctionIdentifier(name.asText(), Option.empty(), Option.empty()),
          registry.lookupFunction(identifier).get(),
          registry.lookupFunctionBuilder(identifier).get()));
    }
  }

  /** Drops the table function {@code name} from {@code session}. */
  public static void drop(SparkSession session, String name) {
    ((org.apache.spark.sql.classic.SparkSession) session).sessionState().tableFunctionRegistry()
        .dropFunction(temporary(name));
  }

  /** The function registry's identifier of temporary function {@code name}. */
  static FunctionIdentifier temporary(String name) {
    return new FunctionIdentifier(name, Option.apply("session"), Option.apply("system"));
  }

  @Override
  public LogicalPlan apply(Seq<Expression> arguments) {
    List<Expression> args = CollectionConverters.asJava(arguments);
    if (args.isEmpty() || args.size() > 2) {
      throw error("takes 1 or 2 arguments (query, k), not " + args.size());
    }
    SparkSession session = SparkSession.getActiveSession().getOrElse(() -> null);
    AccessPolicy.checkIndex(session, index.name);
    int k = args.size() < 2 ? DEFAULT_K : k(args.get(1));
    Expression query = args.get(0);
    DataType type = query.dataType();
    Object value = value(session, query);
    if (value == null) {
      throw error("query is NULL; give an image (BINARY), the path of an image of view "
          + index.view + " (STRING) or a vector (ARRAY<FLOAT>)");
    }
    String shown;
    String thumbnail = null;
    Object search;
    if (type instanceof BinaryType) {
      SimilarityIndex.ImageQuery image = index.imageQuery((byte[]) value);
      if (image.vector() == null) {
        throw error("the query image gives no vector: " + index.function + " returns NULL for "
            + "it (sql_dl_image_error(image) says why it does not decode)");
      }
      search = image.vector();
      thumbnail = image.thumbnail();
      shown = "image";
    } else if (type instanceof StringType) {
      search = qualified(session, value.toString());
      shown = (String) search;
    } else if (type instanceof ArrayType array && array.elementType() instanceof NumericType) {
      search = vector(value, array.elementType());
      shown = "vector";
    } else {
      throw error("query must be an image (BINARY), the path of an image of view "
          + index.view + " (STRING) or a vector (ARRAY<FLOAT>). Received: "
          + type.sql() + " " + query.sql());
    }
    JsonNode found = index.search(session, search, k);
    if (found.has("missing")) {
      throw error("query " + shown + " is not an image of view " + index.view + " with a "
          + "vector (not listed, or it does not decode); give a path the view lists "
          + "(SELECT path FROM " + index.view + "), or the image's bytes");
    }
    return rows(found, shown, thumbnail);
  }

  /** The rows of an answer, as a local relation. */
  private LogicalPlan rows(JsonNode found, String shown, String thumbnail) {
    MetadataBuilder described = new MetadataBuilder().putString("sql_dl_index", index.name)
        .putString("sql_dl_view", index.view).putString("sql_dl_query", shown);
    if (thumbnail != null) {
      described.putString("sql_dl_query_thumbnail", thumbnail);
    }
    Metadata metadata = described.build();
    List<Attribute> output = List.of(
        attribute("path", DataTypes.StringType, false, metadata),
        attribute("label", DataTypes.StringType, true, Metadata.empty()),
        attribute("distance", DataTypes.FloatType, false, Metadata.empty()));
    List<InternalRow> rows = new ArrayList<>();
    for (int i = 0; i < found.get("path").size(); i++) {
      JsonNode label = found.get("label").get(i);
      rows.add(new GenericInternalRow(new Object[] {
          UTF8String.fromString(found.get("path").get(i).asText()),
          label == null || label.isNull() ? null : UTF8String.fromString(label.asText()),
          (float) found.get("distance").get(i).asDouble()}));
    }
    return new LocalRelation(CollectionConverters.asScala(output).toList(),
        CollectionConverters.asScala(rows).toList(), false, Option.empty());
  }

  private static Attribute attribute(String name, DataType type, boolean nullable,
                                     Metadata metadata) {
    return new AttributeReference(name, type, nullable, metadata,
        NamedExpression.newExprId(), CollectionConverters.asScala(List.<String>of()).toList());
  }

  /** {@code k}: a constant integer from 1 to {@link #MAX_K}. */
  private int k(Expression argument) {
    Object value = argument.foldable() ? argument.eval(null) : null;
    DataType type = argument.dataType();
    boolean integer = type.equals(DataTypes.IntegerType) || type.equals(DataTypes.LongType)
        || type.equals(DataTypes.ShortType) || type.equals(DataTypes.ByteType);
    if (!integer || value == null || ((Number) value).longValue() < 1
        || ((Number) value).longValue() > MAX_K) {
      throw error("k must be an integer from 1 to " + MAX_K + ". Received: k="
          + (argument instanceof Literal literal ? String.valueOf(literal.value())
             : argument.sql()));
    }
    return ((Number) value).intValue();
  }

  /** The query's value: a constant's, else the expression's (a scalar subquery, a function
   *  call) run as the user's statement, so that the access policy judges it. */
  private Object value(SparkSession session, Expression query) {
    if (query.foldable()) {
      Object value = query.eval(null);
      return value instanceof UTF8String text ? text.toString() : value;
    }
    if (session == null) {
      throw error("query must be a constant here (no active Spark session). Received: "
          + query.sql());
    }
    List<Row> rows = Dataset.ofRows((org.apache.spark.sql.classic.SparkSession) session,
        new Project(SimilarityIndex.seq(SimilarityIndex.alias(query, "query")),
            new OneRowRelation())).collectAsList();
    return rows.get(0).get(0);
  }

  /** A vector's floats; a NULL element is refused. */
  private float[] vector(Object value, DataType elementType) {
    List<Object> values = new ArrayList<>();
    if (value instanceof ArrayData array) {
      values.addAll(java.util.Arrays.asList(array.toObjectArray(elementType)));
    } else if (value instanceof scala.collection.Seq<?> seq) {
      values.addAll(CollectionConverters.asJava(seq));
    } else if (value instanceof List<?> list) {
      values.addAll(list);
    }
    float[] out = new float[values.size()];
    for (int i = 0; i < out.length; i++) {
      if (values.get(i) == null) {
        throw error("the query vector has a NULL at position " + (i + 1));
      }
      out[i] = ((Number) values.get(i)).floatValue();
    }
    if (out.length != index.dims) {
      throw error("the query vector has " + out.length + " values; " + index.function
          + " gives vectors of " + index.dims);
    }
    return out;
  }

  /** A path as the view's catalog lists it ({@code /data/x.png} is {@code file:/data/x.png}
   *  on a local default file system). */
  private static String qualified(SparkSession session, String path) {
    try {
      Path p = new Path(path);
      return p.getFileSystem(((org.apache.spark.sql.classic.SparkSession) session)
          .sessionState().newHadoopConf()).makeQualified(p).toString();
    } catch (IOException | IllegalArgumentException e) {
      return path;
    }
  }

  private RuntimeException error(String what) {
    return SimilarityIndex.analysisError(index.name + "(query, k): " + what);
  }
}
