package sql_dl.spark.plugin;

import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkContext;
import org.apache.spark.api.python.SimplePythonFunction;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.analysis.FunctionRegistry;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.ExpressionInfo;
import org.apache.spark.sql.execution.python.UserDefinedPythonFunction;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataType;
import scala.Function1;
import scala.Option;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import sql_dl.spark.CheckedArguments;
import sql_dl.spark.access.AccessPolicy;
import sql_dl.spark.access.PluginViews;
import sql_dl.spark.similarity.IndexFunction;
import sql_dl.spark.similarity.IndexesSource;

/**
 * What plugin mode registers in each session for one manifest, as {@code sql_dl.driver.plugin}
 * planned it: the functions (Spark's {@link UserDefinedPythonFunction} of each pickled command,
 * with its DESCRIBE FUNCTION text and argument checks), the image views over their catalogs,
 * the system views, the models shipped to the executors, and the access policy.
 *
 * <p>Spark classes used beyond the public API, checked on Spark 4.3.0: the constructors of
 * {@code SimplePythonFunction} and {@code UserDefinedPythonFunction} (as Spark Connect's
 * planner builds them: no accumulator, so the functions count no images into one), the classic
 * {@code UDFRegistration.registerPython}, and {@code SessionState.functionRegistry()}; a
 * different Spark fails the session's first statement naming them.
 */
final class Registration {

  static final String CATALOG_SOURCE = "sql_dl.spark.catalog.CatalogSource";
  static final String VIEWS_SOURCE = "sql_dl.spark.catalog.ViewsSource";
  private static final String ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch";
  private static final String SPARK_DEFAULT_ARROW_BATCH = "10000";
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final Set<String> ADDED_FILES = new HashSet<>();
  private static final List<String> SYSTEM_VIEWS = List.of(
      "sql_dl_models", "sql_dl_views", "sql_dl_cache", "sql_dl_devices", "sql_dl_indexes");

  private final JsonNode spec;
  private final String workerPython;
  private final Map<String, String> env = new HashMap<>();

  Registration(JsonNode spec, String workerPython) {
    this.spec = spec;
    this.workerPython = workerPython;
    spec.get("env").fields().forEachRemaining(e -> env.put(e.getKey(), e.getValue().asText()));
  }

  /** The files whose change means planning again: the manifest and what the planner read. */
  List<String> inputs(String manifest) {
    List<String> inputs = new ArrayList<>(List.of(manifest));
    spec.get("inputs").forEach(input -> {
      if (!inputs.contains(input.asText())) {
        inputs.add(input.asText());
      }
    });
    return inputs;
  }

  /** Registers everything in {@code session}, as the server's work (an access policy does
   *  not judge it). */
  void applyTo(SparkSession session) {
    checkLockedSettings(session);
    AccessPolicy.asServer(() -> register(
        (org.apache.spark.sql.classic.SparkSession) session));
  }

  private void register(org.apache.spark.sql.classic.SparkSession session) {
    try {
      shipFiles(session.sparkContext());
      for (JsonNode function : spec.get("functions")) {
        register(session, function);
      }
    } catch (LinkageError e) {
      throw new PluginError("sql_dl's plugin cannot register Python functions on this Spark "
          + "version (" + e + "); it was checked on Spark 4.3.0. Received: Spark "
          + session.version());
    }
    for (JsonNode view : spec.get("views")) {
      imageView(session, view);
      PluginViews.add(session, view.get("name").asText());
    }
    systemViews(session);
    indexes(session);
    for (String view : SYSTEM_VIEWS) {
      PluginViews.add(session, view);
    }
    if (SPARK_DEFAULT_ARROW_BATCH.equals(session.conf().get(ARROW_BATCH,
                                                            SPARK_DEFAULT_ARROW_BATCH))) {
      session.conf().set(ARROW_BATCH, spec.get("arrow_batch").asText());
    }
    JsonNode policy = spec.get("policy");
    if (policy != null && !policy.isNull()) {
      try {
        AccessPolicy.install(JSON.writeValueAsString(policy));
      } catch (java.io.IOException e) {
        throw new PluginError("sql_dl cannot install the manifest's access policy: " + e);
      }
    }
  }

  /** Refuses a manifest with an access section on a server that lets analysts read files by
   *  path or settings' values (the settings {@code sql-dl spark-conf} prints for it). */
  private void checkLockedSettings(SparkSession session) {
    SparkConf conf = session.sparkContext().getConf();
    Set<String> choices = new HashSet<>();
    spec.get("operator_choices").forEach(c -> choices.add(c.asText()));
    List<String> missing = new ArrayList<>();
    spec.get("locked_conf").fields().forEachRemaining(e -> {
      String value = conf.get(e.getKey(), null);
      if (value == null || !(choices.contains(e.getKey()) || value.equals(e.getValue().asText()))) {
        missing.add("--conf " + e.getKey() + "=" + e.getValue().asText());
      }
    });
    if (!missing.isEmpty()) {
      throw new PluginError("the manifest " + spec.get("source").asText() + " has an access "
          + "section, and this server does not start with the settings that keep analysts off "
          + "programs, files and the server's settings: start it with " + String.join(" ", missing)
          + " (sql-dl spark-conf --manifest M prints them)");
    }
  }

  private void shipFiles(SparkContext context) {
    synchronized (ADDED_FILES) {
      for (JsonNode file : spec.get("files")) {
        if (ADDED_FILES.add(file.asText())) {
          context.addFile(file.asText());
        }
      }
    }
  }

  /** The function of a pickled command (see {@code sql_dl.driver.plugin._command}). */
  private UserDefinedPythonFunction function(String name, JsonNode command) {
    SimplePythonFunction python = new SimplePythonFunction(
        Base64.getDecoder().decode(command.get("command").asText()), env, new ArrayList<>(),
        workerPython, spec.get("python").asText(), new ArrayList<>(), null);
    return new UserDefinedPythonFunction(name, python,
        DataType.fromJson(command.get("return_type").asText()),
        command.get("eval_type").asInt(), command.get("deterministic").asBoolean(),
        new ArrayList<>(), new ArrayList<>());
  }

  private void register(org.apache.spark.sql.classic.SparkSession session, JsonNode function) {
    String name = function.get("name").asText();
    JsonNode doc = function.get("doc");
    FunctionRegistry registry = session.sessionState().functionRegistry();
    FunctionIdentifier qualified = new FunctionIdentifier(name, Option.apply("session"),
                                                          Option.apply("system"));
    registry.dropFunction(qualified);  // replacing it would log a warning
    ((org.apache.spark.sql.classic.UDFRegistration) session.udf())
        .registerPython(name, function(name, function));
    Function1<Seq<Expression>, Expression> builder =
        registry.lookupFunctionBuilder(qualified).get();
    ExpressionInfo info = new ExpressionInfo(doc.get("source").asText(), null, name,
        doc.get("usage").asText(), doc.get("arguments").asText(), doc.get("examples").asText(),
        "", "", "", "", "python_udf");
    registry.dropFunction(qualified);
    registry.registerFunction(qualified, info,
        new CheckedArguments(name, doc.get("parameters").asText(), builder));
  }

  /** An image view's catalog options. */
  private static Map<String, String> options(JsonNode view) {
    Map<String, String> options = new LinkedHashMap<>();
    view.get("options").fields().forEachRemaining(e -> options.put(e.getKey(),
                                                                   e.getValue().asText()));
    return options;
  }

  private static void imageView(SparkSession session, JsonNode view) {
    List<String> columns = new ArrayList<>();
    view.get("columns").forEach(c -> columns.add(c.asText()));
    Dataset<Row> frame = session.read().format(CATALOG_SOURCE).options(options(view)).load()
        .selectExpr(columns.toArray(String[]::new));
    JsonNode where = view.get("where");
    if (where != null && !where.isNull()) {
      frame = frame.where(where.asText());
    }
    frame.createOrReplaceTempView(view.get("name").asText());
  }

  private void systemViews(SparkSession session) {
    session.sql(spec.get("models_query").asText()).createOrReplaceTempView("sql_dl_models");
    Map<String, Map<String, String>> catalogs = new LinkedHashMap<>();
    for (JsonNode view : spec.get("views")) {
      catalogs.put(view.get("name").asText(), options(view));
    }
    try {
      session.read().format(VIEWS_SOURCE).option("views", JSON.writeValueAsString(catalogs))
          .load().createOrReplaceTempView("sql_dl_views");
    } catch (java.io.IOException e) {
      throw new IllegalStateException(e);
    }
    int tasks = session.sparkContext().defaultParallelism();
    Column cache = probe("sql_dl_cache", spec.get("probes").get("cache"));
    session.range(0, tasks, 1, tasks).select(functions.explode(cache).as("s")).select("s.*")
        .groupBy("host", "directory", "model")
        .agg(functions.max("entries").as("entries"), functions.max("bytes").as("bytes"),
             functions.max("hits").as("hits"))
        .orderBy("host", "directory", "model").createOrReplaceTempView("sql_dl_cache");
    Column devices = probe("sql_dl_devices", spec.get("probes").get("devices"));
    session.range(0, tasks, 1, tasks).select(functions.explode(devices).as("d")).select("d.*")
        .dropDuplicates().orderBy("host", "worker", "device", "model")
        .createOrReplaceTempView("sql_dl_devices");
  }

  /** The manifest's indexes (their table functions), and {@code sql_dl_indexes}. */
  private void indexes(org.apache.spark.sql.classic.SparkSession session) {
    try {
      String folders = spec.get("indexes").isEmpty() ? "{}"
          : IndexFunction.register(session, JSON.writeValueAsString(spec.get("indexes")));
      session.read().format(IndexesSource.class.getName()).option("indexes", folders).load()
          .createOrReplaceTempView("sql_dl_indexes");
    } catch (java.io.IOException e) {
      throw new IllegalStateException(e);
    }
  }

  /** A system view's probe (see {@code sql_dl.executor.probes}) applied to {@code id}. */
  private Column probe(String view, JsonNode command) {
    return function(view + "_probe", command).apply(
        CollectionConverters.asScala(List.of(functions.col("id"))).toSeq());
  }
}
