package sql_dl.spark.similarity;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantLock;

import com.fasterxml.jackson.databind.JsonNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.expressions.Alias;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.expressions.NamedExpression;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.OneRowRelation;
import org.apache.spark.sql.catalyst.plans.logical.Project;
import org.apache.spark.sql.classic.Dataset;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataTypes;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import scala.Function1;
import scala.Option;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import sql_dl.spark.CheckedArguments;
import sql_dl.spark.access.AccessPolicy;
import sql_dl.spark.catalog.CatalogSource;

/**
 * One embedding index of the manifest: the vectors of an image view's images by one function,
 * kept by the {@link IndexService} in a folder on the driver, and brought up to date with the
 * view before each search.
 *
 * <p>An update follows the view's catalog: when the catalog's snapshot (its segments) is the
 * one last followed, nothing is read. Otherwise a Spark job writes the listing ({@code path,
 * label, length, modification_time}), the service says which images are new or changed, a
 * second job runs the function on those only (in parallel, through the prediction cache) and
 * writes their vectors as Parquet, and the service adds them to its graph and drops the
 * images removed. Both jobs run as the server's work, on the view's plan and the function's
 * builder as they were registered (a user's temporary view or function of the same name is
 * not used).
 */
public final class SimilarityIndex {

  static final Logger LOG = LoggerFactory.getLogger(SimilarityIndex.class);
  /** The Spark setting of the local folder under which indexes are kept. */
  public static final String INDEX_DIR_CONF = "spark.sql_dl.indexDir";
  /** How long a search waits for an update under way (seconds; default 60). */
  public static final String WAIT_CONF = "spark.sql_dl.indexWaitSeconds";
  /** sql_dl's function that makes an image's thumbnail (sql_dl.rules names it the same). */
  static final String THUMBNAIL_FUNCTION = "sql_dl_thumbnail";
  /** Set in the sessions indexes run their jobs in, which plugin mode leaves as they are. */
  public static final String INTERNAL_SESSION_CONF = "sql_dl.internalSession";
  private static final Map<String, SimilarityIndex> INDEXES = new ConcurrentHashMap<>();

  final String name;
  final String view;
  final String function;
  final String metric;
  final int dims;
  final String directory;
  final String description;
  private final String python;
  private final long stalenessMs;

  private volatile SparkSession session;
  private volatile LogicalPlan viewPlan;
  private volatile Function1<Seq<Expression>, Expression> vectorBuilder;
  private volatile Function1<Seq<Expression>, Expression> thumbnailBuilder;
  private final ReentrantLock updating = new ReentrantLock();
  private volatile long updateStarted;

  private volatile String state = "new";
  private volatile String problem;
  private volatile long size;
  private volatile long listed;
  private volatile long memory;
  private volatile long pending;
  private volatile Long updated;
  private volatile Long updateMs;
  private String version;  // the catalog snapshot last followed
  private long checked;  // when it was last compared with the catalog
  private boolean opened;

  private SimilarityIndex(JsonNode spec, String directory) {
    this.name = spec.get("name").asText();
    this.view = spec.get("view").asText();
    this.function = spec.get("function").asText();
    this.metric = spec.get("metric").asText();
    this.dims = spec.get("dims").asInt();
    this.description = spec.hasNonNull("description") ? spec.get("description").asText() : null;
    this.python = spec.get("python").asText();
    this.stalenessMs = spec.get("staleness_ms").asLong();
    this.directory = directory;
  }

  /**
   * The index {@code spec} (JSON from {@code sql_dl.driver.indexes.index_spec}) describes,
   * following the view and the function as {@code session} defines them now.
   */
  static SimilarityIndex of(SparkSession session, JsonNode spec) {
    String directory = directory(session, spec);
    SimilarityIndex index = INDEXES.computeIfAbsent(directory,
        d -> new SimilarityIndex(spec, d));
    index.follow(session);
    return index;
  }

  /** The registered index in {@code directory}, or null. */
  static SimilarityIndex at(String directory) {
    return INDEXES.get(directory);
  }

  private static String directory(SparkSession session, JsonNode spec) {
    String dir = session.conf().get(INDEX_DIR_CONF, null);
    if (dir == null) {
      String warehouse = session.conf().get("spark.sql.warehouse.dir");
      URIPath local = URIPath.local(warehouse);
      dir = local != null ? new File(local.path(), "_sql_dl_indexes").getPath()
          : new File(System.getProperty("java.io.tmpdir"), "sql_dl-indexes").getPath();
    }
    return new File(URIPath.local(dir) != null ? URIPath.local(dir).path() : dir,
        spec.get("name").asText() + "-" + spec.get("key").asText()).getAbsolutePath();
  }

  /**
   * Takes the view's plan and the function's builder from {@code session}, and a copy of it
   * to run the index's jobs in: a table function is called while Spark holds its session's
   * catalog lock, so an update running in another thread (the background one) cannot use
   * that session without waiting for the search that waits for it.
   */
  private void follow(SparkSession session) {
    org.apache.spark.sql.classic.SparkSession classic =
        (org.apache.spark.sql.classic.SparkSession) session;
    this.viewPlan = session.table(view).queryExecution().analyzed();
    var functions = classic.sessionState().functionRegistry();
    this.vectorBuilder = functions.lookupFunctionBuilder(IndexFunction.temporary(function))
        .get();
    this.thumbnailBuilder = functions.lookupFunctionBuilder(
        IndexFunction.temporary(THUMBNAIL_FUNCTION)).getOrElse(() -> null);
    org.apache.spark.sql.classic.SparkSession jobs = classic.cloneSession();
    jobs.conf().set(INTERNAL_SESSION_CONF, "true");
    // its state copies the session's catalog lazily, under that catalog's lock: now, rather
    // than in the background thread while a search holds that lock
    jobs.sessionState().catalog();
    jobs.sessionState().analyzer();
    shareFiles(classic, jobs);
    this.session = jobs;
  }

  /**
   * Gives {@code jobs} the files (the shipped models) added in {@code from}: Spark keeps each
   * session's files apart when it isolates sessions' artifacts (as Spark Connect does), and a
   * copy of a session gets a state of its own.
   */
  private static void shareFiles(org.apache.spark.sql.classic.SparkSession from,
                                 org.apache.spark.sql.classic.SparkSession jobs) {
    org.apache.spark.SparkContext context = from.sparkContext();
    org.apache.spark.JobArtifactState sourceState = from.artifactManager().state();
    org.apache.spark.JobArtifactState targetState = jobs.artifactManager().state();
    if (sourceState == null || targetState == null) {
      return;  // sessions' artifacts are not kept apart: every job sees every file
    }
    String source = sourceState.uuid();
    String target = targetState.uuid();
    if (source.equals(target)) {
      return;
    }
    scala.Option<scala.collection.concurrent.Map<String, Object>> files =
        context.addedFiles().get(source);
    if (files.isEmpty()) {
      return;
    }
    List<String> keys = new ArrayList<>(CollectionConverters.asJava(files.get().keySet()));
    jobs.artifactManager().withResources(new scala.runtime.AbstractFunction0<Object>() {
      @Override
      public Object apply() {
        keys.forEach(context::addFile);
        return null;
      }
    });
  }



  /** Builds or brings the index up to date in the background (a search waits for it, up to
   *  {@link #WAIT_CONF}). */
  void updateInBackground() {
    Thread thread = new Thread(() -> {
      try {
        update(Long.MAX_VALUE);
      } catch (RuntimeException e) {
        LOG.warn("sql_dl: index {} cannot be built: {}", name, e.getMessage());
      }
    }, "sql_dl-index-" + name);
    thread.setDaemon(true);
    thread.start();
  }

  /**
   * Brings the index up to date with its view, as of now or within the view's
   * {@code max_staleness}: nothing when the view's catalog did not change. An update under
   * way (the first build of a large view, in the background) is waited for up to
   * {@code waitMs}; longer, the search fails with the index's progress.
   */
  void update(long waitMs) {
    boolean locked;
    try {
      locked = updating.tryLock(waitMs, TimeUnit.MILLISECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      locked = false;
    }
    if (!locked) {
      throw analysisError(name + ": the index is being " + (updated == null ? "built" : "updated")
          + " (" + (System.currentTimeMillis() - updateStarted) / 1000 + " s so far"
          + (pending > 0 ? ", " + pending + " images of view " + view + " to embed" : "")
          + "); search again when sql_dl_indexes shows it ready, or set " + WAIT_CONF
          + " to wait longer. Received: " + WAIT_CONF + "=" + waitMs / 1000);
    }
    try {
      if (opened && version != null && System.currentTimeMillis() - checked < stalenessMs) {
        return;
      }
      updateStarted = System.currentTimeMillis();
      RuntimeException[] failure = new RuntimeException[1];
      AccessPolicy.asServer(() -> {
        try {
          follow();
        } catch (RuntimeException e) {
          failure[0] = e;
        }
      });
      if (failure[0] != null) {
        state = "failed";
        problem = failure[0].getMessage();
        throw failure[0];
      }
    } finally {
      updating.unlock();
    }
  }

  private void follow() {
    long started = System.currentTimeMillis();
    org.apache.spark.sql.classic.SparkSession spark =
        (org.apache.spark.sql.classic.SparkSession) session;
    if (!opened) {
      Map<String, Object> open = request("open");
      open.put("dims", dims);
      open.put("metric", metric);
      state(service().call(open));
      opened = true;
    }
    Dataset<Row> rows = Dataset.ofRows(spark, viewPlan);
    Dataset<Row> listing = rows.selectExpr("path", "label", "length",
        "unix_micros(modification_time) AS modification_time");
    String now = catalogVersion(listing.queryExecution().optimizedPlan());
    if (now != null && now.equals(version)) {
      checked = started;
      return;
    }
    state = updated == null ? "building" : "updating";
    Scratch scratch = new Scratch(spark, directory);
    try {
      listing.write().mode("overwrite").parquet(scratch.uri("listing"));
      Map<String, Object> diff = request("diff");
      diff.put("listing", scratch.local("listing"));
      JsonNode changes = service().call(diff);
      JsonNode embed = changes.get("embed");
      pending = embed.isTextual() ? changes.get("listed").asLong() : embed.size();
      Map<String, Object> commit = request("commit");
      if (pending > 0) {
        Dataset<Row> chosen = rows;
        if (!embed.isTextual()) {
          List<Object> paths = new ArrayList<>();
          embed.forEach(p -> paths.add(p.asText()));
          chosen = rows.filter(functions.col("path").isin(paths.toArray()));
        }
        embeddings(spark, chosen).write().mode("overwrite").parquet(scratch.uri("embeddings"));
        commit.put("embeddings", scratch.local("embeddings"));
      }
      state(service().call(commit));
      version = now;
      checked = started;
      updateMs = System.currentTimeMillis() - started;
      state = "ready";
      problem = null;
      LOG.info("sql_dl: index {} follows view {}: {} images embedded, {} in all, in {} ms",
          name, view, pending, size, updateMs);
    } finally {
      pending = 0;
      scratch.delete();
    }
  }

  /** {@code rows}' listing columns and the function's vector of each image. */
  private Dataset<Row> embeddings(org.apache.spark.sql.classic.SparkSession spark,
                                  Dataset<Row> rows) {
    LogicalPlan plan = rows.selectExpr("path", "label", "length",
        "unix_micros(modification_time) AS modification_time", "image")
        .queryExecution().analyzed();
    List<Attribute> output = CollectionConverters.asJava(plan.output());
    List<NamedExpression> columns = new ArrayList<>(output.subList(0, 4));
    columns.add(alias(vectorBuilder.apply(seq(output.get(4))), "vector"));
    return Dataset.ofRows(spark, new Project(CollectionConverters.asScala(columns).toList(),
        plan));
  }

  /** An image query: its vector, or null when the function gives none (an image that does
   *  not decode), and its thumbnail (a data URL, or null). */
  record ImageQuery(float[] vector, String thumbnail) {}

  /** The vector and thumbnail of an image's bytes, in one short job run as the server's
   *  work. */
  ImageQuery imageQuery(byte[] image) {
    org.apache.spark.sql.classic.SparkSession spark =
        (org.apache.spark.sql.classic.SparkSession) session;
    Literal bytes = Literal.create(image, DataTypes.BinaryType);
    List<NamedExpression> columns = new ArrayList<>(List.of(
        alias(vectorBuilder.apply(seq(bytes)), "vector")));
    if (thumbnailBuilder != null) {
      columns.add(alias(thumbnailBuilder.apply(seq(bytes)), "thumbnail"));
    }
    Row[] result = new Row[1];
    AccessPolicy.asServer(() -> result[0] = (Row) Dataset.ofRows(spark, new Project(
        CollectionConverters.asScala(columns).toList(), new OneRowRelation()))
        .collectAsList().get(0));
    String thumbnail = columns.size() > 1 && !result[0].isNullAt(1) ? result[0].getString(1)
        : null;
    if (result[0].isNullAt(0)) {
      return new ImageQuery(null, thumbnail);
    }
    List<Object> values = result[0].getList(0);
    float[] out = new float[values.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = ((Number) values.get(i)).floatValue();
    }
    return new ImageQuery(out, thumbnail);
  }

  /** {@link #WAIT_CONF} of {@code session}, in milliseconds. */
  private static long waitMs(SparkSession session) {
    String seconds = session.conf().get(WAIT_CONF, "60");
    try {
      return Math.max(0, (long) (Double.parseDouble(seconds) * 1000));
    } catch (NumberFormatException e) {
      throw analysisError(WAIT_CONF + " must be a number of seconds. Received: " + WAIT_CONF
          + "=" + seconds);
    }
  }

  /** The service's answer to a search, nearest first: {@code path, label, distance}, or
   *  {@code missing} for a {@code path} query of an image without a vector. */
  JsonNode search(SparkSession user, Object query, int k) {
    update(waitMs(user != null ? user : session));
    if (listed == 0) {
      throw analysisError(name + ": view " + view + " has no images yet, so the index is "
          + "empty; add images under the view's folder (sql_dl_views shows what it lists)");
    }
    Map<String, Object> search = request("search");
    if (query instanceof String path) {
      search.put("path", path);
    } else {
      search.put("vector", query);
    }
    search.put("k", k);
    try {
      return service().call(search);
    } catch (IndexService.IndexRequestError e) {
      throw analysisError(name + ": " + e.getMessage());
    }
  }

  /** This index's row of {@code sql_dl_indexes}. */
  Map<String, Object> describe() {
    Map<String, Object> d = new LinkedHashMap<>();
    d.put("state", state);
    d.put("images", opened ? size : null);
    d.put("listed", opened ? listed : null);
    d.put("pending", pending);
    d.put("updated", updated);
    d.put("update_ms", updateMs);
    d.put("memory", opened ? memory : null);
    d.put("problem", problem);
    return d;
  }

  private void state(JsonNode answer) {
    size = answer.get("size").asLong();
    listed = answer.get("listed").asLong();
    memory = answer.get("memory").asLong();
    JsonNode when = answer.get("updated");
    updated = when == null || when.isNull() ? null : (long) (when.asDouble() * 1000);
    if (updated != null && "new".equals(state)) {
      state = "ready";
    }
  }

  private Map<String, Object> request(String op) {
    Map<String, Object> request = new LinkedHashMap<>();
    request.put("op", op);
    request.put("dir", directory);
    return request;
  }

  private IndexService service() {
    return IndexService.of(python);
  }

  /** The catalog snapshot a plan reads (its segments), or null when it reads none. */
  private static String catalogVersion(LogicalPlan plan) {
    StringBuilder version = new StringBuilder();
    plan.foreach(node -> {
      if (node instanceof LogicalRelation r && r.relation() instanceof HadoopFsRelation h
          && h.location() instanceof CatalogSource.CatalogIndex index) {
        version.append(index.files()).append(':')
            .append(CollectionConverters.asJava(index.rootPaths())).append(';');
      }
      return null;
    });
    return version.length() == 0 ? null : version.toString();
  }

  static NamedExpression alias(Expression child, String name) {
    return new Alias(child, name, org.apache.spark.sql.catalyst.expressions.NamedExpression
        .newExprId(), CollectionConverters.asScala(List.<String>of()).toList(), Option.empty(),
        CollectionConverters.asScala(List.<String>of()).toList());
  }

  static <T> Seq<T> seq(T item) {
    return CollectionConverters.asScala(List.of(item)).toList();
  }

  /** An analysis error Spark shows as its one line (as sql_dl's argument checks do). */
  static RuntimeException analysisError(String message) {
    return CheckedArguments.unchecked(new AnalysisException(CheckedArguments.CONDITION,
        new scala.collection.immutable.Map.Map1<String, String>("errorMessage", message)));
  }

  /** A local path's form of {@code uri} ({@code file:/x}, {@code /x}), or null. */
  record URIPath(String path) {
    static URIPath local(String uri) {
      if (uri == null) {
        return null;
      }
      if (uri.startsWith("file:")) {
        return new URIPath(new Path(uri).toUri().getPath());
      }
      return uri.contains(":/") ? null : new URIPath(uri);
    }
  }

  /**
   * Where an update's Spark jobs write (the listing, the new vectors) and the service reads:
   * the index's own folder when Spark's default file system is the driver's, else a folder on
   * the default file system, copied here to be read.
   */
  private static final class Scratch {
    private final Configuration conf;
    private final Path root;
    private final File local;
    private final boolean remote;

    Scratch(org.apache.spark.sql.classic.SparkSession spark, String directory) {
      conf = spark.sessionState().newHadoopConf();
      String id = "update-" + UUID.randomUUID();
      local = new File(directory, id);
      try {
        FileSystem fs = FileSystem.get(conf);
        remote = !"file".equals(fs.getScheme().toLowerCase(Locale.ROOT));
        root = remote ? new Path(fs.getHomeDirectory(), ".sql_dl/index-updates/" + id)
            : new Path(local.toURI());
      } catch (IOException e) {
        throw new IllegalStateException("sql_dl cannot reach Spark's default file system: "
            + e.getMessage(), e);
      }
    }

    String uri(String part) {
      return new Path(root, part).toString();
    }

    /** The local copy of {@code part}, for the service. */
    String local(String part) {
      File target = new File(local, part);
      if (remote) {
        try {
          Path source = new Path(root, part);
          source.getFileSystem(conf).copyToLocalFile(false, source, new Path(target.toURI()),
              true);
        } catch (IOException e) {
          throw new IllegalStateException("sql_dl cannot copy " + uri(part) + " to the driver: "
              + e.getMessage(), e);
        }
      }
      return target.getPath();
    }

    void delete() {
      try {
        if (remote) {
          root.getFileSystem(conf).delete(root, true);
        }
        FileSystem.getLocal(conf).delete(new Path(local.toURI()), true);
      } catch (IOException e) {
        LOG.warn("sql_dl: cannot delete {}: {}", local, e.getMessage());
      }
    }
  }
}
