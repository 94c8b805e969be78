package sql_dl.spark;

import java.util.Locale;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.plans.logical.Filter;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.Project;
import org.apache.spark.sql.catalyst.plans.logical.Repartition;
import org.apache.spark.sql.catalyst.rules.Rule;
import org.apache.spark.sql.execution.datasources.FileIndex;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.execution.datasources.InMemoryFileIndex;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import org.apache.spark.sql.execution.datasources.NoopCache$;
import org.apache.spark.sql.execution.datasources.PartitioningAwareFileIndex;
import org.apache.spark.sql.execution.datasources.binaryfile.BinaryFileFormat;
import org.apache.spark.sql.types.StructType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import scala.Function1;
import scala.Option;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractPartialFunction;

/**
 * Image views that follow their folders: each query lists an image view's folder anew (or
 * reuses a listing younger than the view's {@code max_staleness}), reads it with
 * {@link ImageFileFormat} (deleted files are skipped and counted), and in as many tasks as the
 * new listing needs.
 *
 * <p>sql_dl marks the {@code binaryFile} relations of its image views with the options
 * {@value #STALENESS} and {@value #IMAGES_PER_TASK}; a temporary view built from a DataFrame, and
 * a metastore table a session has read, would otherwise keep the file list of their first
 * analysis. The task count is the view's {@code COALESCE} hint, {@code Repartition(n, false)}
 * over the relation: one task per core at least, more past {@value #IMAGES_PER_TASK} files
 * each. Injected with {@code injectPreCBORule}: it runs once per query, after the operator
 * optimizations. Checked on Spark 4.3.0.
 */
public final class LiveImageFolders extends Rule<LogicalPlan> {

  static final String STALENESS = "sql_dl.max_staleness_ms";
  static final String IMAGES_PER_TASK = "sql_dl.images_per_task";
  private static final Logger LOG = LoggerFactory.getLogger(LiveImageFolders.class);
  private static final ConcurrentHashMap<String, Listing> LISTINGS = new ConcurrentHashMap<>();

  private final SparkSession session;

  public LiveImageFolders(SparkSession session) {
    this.session = session;
  }

  private record Listing(FileIndex index, long listedAt) {}

  @Override
  public LogicalPlan apply(LogicalPlan plan) {
    return plan.transformUp(new AbstractPartialFunction<LogicalPlan, LogicalPlan>() {
      @Override
      public boolean isDefinedAt(LogicalPlan node) {
        return node instanceof LogicalRelation || node instanceof Repartition;
      }

      @Override
      public <A1 extends LogicalPlan, B1> B1 applyOrElse(A1 node, Function1<A1, B1> otherwise) {
        LogicalPlan rewritten = rewrite(node);
        @SuppressWarnings("unchecked")
        B1 result = rewritten != null ? (B1) rewritten : otherwise.apply(node);
        return result;
      }
    });
  }

  /** The node with a fresh listing or task count, or null to leave it as it is. */
  private LogicalPlan rewrite(LogicalPlan node) {
    if (node instanceof LogicalRelation relation && imageFolder(relation) != null
        && !(imageFolder(relation).fileFormat() instanceof ImageFileFormat)) {
      return relisted(relation, imageFolder(relation));
    }
    if (node instanceof Repartition repartition && !repartition.shuffle()) {
      HadoopFsRelation folder = folderBelow(repartition.child());
      if (folder != null && folder.fileFormat() instanceof ImageFileFormat
          && folder.location() instanceof PartitioningAwareFileIndex index) {
        int tasks = tasks(index.allFiles().size(), Long.parseLong(option(folder, IMAGES_PER_TASK)));
        return tasks == repartition.numPartitions() ? null
            : new Repartition(tasks, false, repartition.child());
      }
    }
    return null;
  }

  private int tasks(int files, long perTask) {
    int cores = session.sparkContext().defaultParallelism();
    return (int) Math.max(cores, (files + perTask - 1) / Math.max(1, perTask));
  }

  private LogicalPlan relisted(LogicalRelation relation, HadoopFsRelation folder) {
    if (!(folder.location() instanceof InMemoryFileIndex old)) {
      return null;
    }
    long staleness = Long.parseLong(option(folder, STALENESS));
    String key = old.rootPaths().mkString("\n") + "\n"
        + new TreeMap<>(CollectionConverters.asJava(folder.options()));
    long now = System.nanoTime();
    Listing listing = staleness > 0 ? LISTINGS.get(key) : null;
    if (listing == null || now - listing.listedAt() > staleness * 1_000_000L) {
      StructType partitions = folder.partitionSchema();
      FileIndex index = new InMemoryFileIndex(session, old.rootPaths(), folder.options(),
          partitions.isEmpty() ? Option.empty() : Option.apply(folder.schema()),
          NoopCache$.MODULE$, Option.empty(), Option.empty());
      if (!index.partitionSchema().equals(partitions)) {
        LOG.warn("Image folder {}: its partition directories changed ({} before, {} now); the "
            + "view keeps its earlier listing until sql_dl's bootstrap runs again",
            old.rootPaths().mkString(", "), partitions.simpleString(),
            index.partitionSchema().simpleString());
        return null;
      }
      listing = new Listing(index, now);
      if (staleness > 0) {
        LISTINGS.put(key, listing);
      }
    }
    HadoopFsRelation fresh = new HadoopFsRelation(listing.index(), folder.partitionSchema(),
        folder.dataSchema(), folder.bucketSpec(),
        new ImageFileFormat(SkippedFiles.forContext(session.sparkContext())), folder.options(),
        session);
    return relation.copy(fresh, relation.output(), relation.catalogTable(),
        relation.isStreaming(), relation.stream());
  }

  /** The image folder relation under Project and Filter nodes, or null. */
  private static HadoopFsRelation folderBelow(LogicalPlan node) {
    while (node instanceof Project || node instanceof Filter) {
      node = node.children().head();
    }
    return node instanceof LogicalRelation relation ? imageFolder(relation) : null;
  }

  /** The relation of one of sql_dl's image views, or null. */
  private static HadoopFsRelation imageFolder(LogicalRelation relation) {
    return relation.relation() instanceof HadoopFsRelation folder
        && folder.fileFormat() instanceof BinaryFileFormat
        && option(folder, STALENESS) != null && option(folder, IMAGES_PER_TASK) != null
        ? folder : null;
  }

  private static String option(HadoopFsRelation folder, String name) {
    for (java.util.Map.Entry<String, String> e
        : CollectionConverters.asJava(folder.options()).entrySet()) {
      if (e.getKey().toLowerCase(Locale.ROOT).equals(name)) {
        return e.getValue();
      }
    }
    return null;
  }
}
