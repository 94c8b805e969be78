package sql_dl.spark.catalog;

import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.expressions.Alias;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.NamedExpression;
import org.apache.spark.sql.catalyst.expressions.PythonUDF;
import org.apache.spark.sql.catalyst.plans.logical.Filter;
import org.apache.spark.sql.catalyst.plans.logical.GlobalLimit;
import org.apache.spark.sql.catalyst.plans.logical.LocalLimit;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.Offset;
import org.apache.spark.sql.catalyst.plans.logical.Project;
import org.apache.spark.sql.catalyst.plans.logical.Repartition;
import org.apache.spark.sql.catalyst.rules.Rule;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import scala.Function1;
import scala.Option;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractPartialFunction;

/**
 * The optimizer's side of image catalogs ({@link CatalogSource}), in two rules.
 *
 * <p>{@link Fresh} (before {@code TopNBeforePython}) gives each catalog relation of a query
 * the catalog's snapshot as the query starts (one per catalog per query, so a self-join sees
 * one folder), and puts {@link ImageBytes}{@code (path)} in place of its {@code image} column
 * where a projection (through filters) reads it: {@code count(*)}, filters and sorts on the
 * other columns then read no image, and {@code TopNBeforePython} moves the read above an
 * {@code ORDER BY ... LIMIT n}, so that n images are read.
 *
 * <p>{@link Tasks} (after it) reads images and runs models in as many tasks as the snapshot
 * needs (a multiple of the cores, each of at most {@code sql_dl.images_per_task} images): a
 * round-robin repartition of the catalog's rows (paths, not images) below the projection
 * that reads or scores them, unless a LIMIT above it takes only a few rows, or the view holds
 * at most {@link #READ_IN_PLACE_UP_TO} images (a shuffle's files stay on disk until the driver's
 * next GC). Each task costs Spark about 20 ms of CPU (deserializing it, generating its
 * projections, starting its Python runner), so tasks of thousands of small images keep that
 * under 2% of a full scan. Checked on Spark 4.3.0.
 */
public final class LateImages {

  static final String IMAGES_PER_TASK = "sql_dl.images_per_task";
  static final int DEFAULT_IMAGES_PER_TASK = 4096;  // the manifest's default too
  static final int READ_IN_PLACE_UP_TO = 1024;  // fewer images are read where the catalog's rows are

  private LateImages() {}

  /** Fresh snapshots and late image reads. */
  public static final class Fresh extends Rule<LogicalPlan> {
    private final SparkSession session;

    public Fresh(SparkSession session) {
      this.session = session;
    }

    @Override
    public LogicalPlan apply(LogicalPlan plan) {
      Map<ImageCatalog, ImageCatalog.Snapshot> snapshots = new IdentityHashMap<>();
      LogicalPlan fresh = transformUp(plan, node -> {
        CatalogSource.CatalogIndex index = node instanceof LogicalRelation r ? indexOf(r) : null;
        if (index == null) {
          return null;
        }
        LogicalRelation r = (LogicalRelation) node;
        ImageCatalog catalog = ImageCatalog.of(session, index.spec());
        long staleness = index.spec().stalenessMs();  // this view's
        ImageCatalog.Snapshot snapshot = snapshots.computeIfAbsent(catalog,
            c -> c.snapshot(staleness));
        HadoopFsRelation relation = CatalogSource.relation(session, catalog, index.spec(),
            index.options(), snapshot);
        return r.copy(relation, r.output(), r.catalogTable(), r.isStreaming(), r.stream());
      });
      return lateReads(fresh);
    }

    private LogicalPlan lateReads(LogicalPlan plan) {
      Set<Object> handled = Collections.newSetFromMap(new IdentityHashMap<>());
      LogicalPlan projected = transformUp(plan, node -> {
        LogicalRelation r = node instanceof Project project ? catalogBelow(project) : null;
        if (r == null) {
          return null;
        }
        Attribute image = column(r, "image");
        Attribute path = column(r, "path");
        handled.add(r);
        Function<Expression, Expression> read =
            e -> e.transformUp(replacing(image, path, session.sparkContext()));
        List<NamedExpression> list = new ArrayList<>();
        for (NamedExpression e : CollectionConverters.asJava(((Project) node).projectList())) {
          list.add(e instanceof Attribute a && a.exprId().equals(image.exprId())
              ? readAs(a, path) : (NamedExpression) read.apply((Expression) e));
        }
        return new Project(CollectionConverters.asScala(list).toList(),
            filtersReading(((Project) node).child(), read));
      });
      // any other reader of a relation's image column: read where the relation is
      return transformUp(projected, node -> {
        if (node instanceof LogicalRelation r && indexOf(r) != null && !handled.contains(r)) {
          Attribute image = column(r, "image");
          if (projected.exists(n -> n != r && n.references().contains(image))) {
            List<NamedExpression> list = new ArrayList<>();
            for (Attribute a : CollectionConverters.asJava(r.output())) {
              list.add(a == image ? readAs(a, column(r, "path")) : a);
            }
            return new Project(CollectionConverters.asScala(list).toList(), r);
          }
        }
        return null;
      });
    }

    /** The image column {@code a}, read from the file at {@code path}, under its own id. */
    private NamedExpression readAs(Attribute a, Attribute path) {
      return new Alias(ImageBytes.of(path, session.sparkContext()), a.name(), a.exprId(),
          a.qualifier(), Option.empty(), emptySeq());
    }

    /** {@code node}'s filters (down to the relation), their conditions passed to
     *  {@code read}. */
    private static LogicalPlan filtersReading(LogicalPlan node,
                                              Function<Expression, Expression> read) {
      return node instanceof Filter f
          ? new Filter(read.apply(f.condition()), filtersReading(f.child(), read)) : node;
    }
  }

  /** Tasks enough for the images a query reads or scores. */
  public static final class Tasks extends Rule<LogicalPlan> {
    private final SparkSession session;

    public Tasks(SparkSession session) {
      this.session = session;
    }

    @Override
    public LogicalPlan apply(LogicalPlan plan) {
      Set<Object> limited = Collections.newSetFromMap(new IdentityHashMap<>());
      plan.foreach(node -> {
        if (node instanceof LocalLimit || node instanceof GlobalLimit || node instanceof Offset) {
          LogicalPlan below = node.children().head();
          while (below instanceof Project || below instanceof Filter
              || below instanceof LocalLimit || below instanceof Offset) {
            limited.add(below);
            below = below.children().head();
          }
        }
        return null;
      });
      return transformUp(plan, node -> {
        if (!(node instanceof Project project) || limited.contains(project)
            || !project.projectList().exists(e -> ((Expression) e).exists(
                x -> x instanceof PythonUDF || ImageBytes.is(x)))) {
          return null;
        }
        LogicalRelation r = catalogBelow(project);
        if (r == null) {
          return null;
        }
        CatalogSource.CatalogIndex index = indexOf(r);
        long files = index.files();
        String given = index.options().getOrElse(IMAGES_PER_TASK, () -> null);
        long perTask = Math.max(1, given == null ? DEFAULT_IMAGES_PER_TASK : Long.parseLong(given));
        if (files <= Math.min(perTask, READ_IN_PLACE_UP_TO)) {
          return null;  // one task's worth: no shuffle (its files would stay until a GC)
        }
        int tasks = tasks(files, perTask, session.sparkContext().defaultParallelism());
        return project.withNewChildren(CollectionConverters.asScala(
            List.<LogicalPlan>of(new Repartition(tasks, true, project.child()))).toSeq());
      });
    }
  }

  /**
   * How many tasks read {@code files} images: a multiple of {@code cores} (so that the last
   * round of tasks keeps every core busy), each of at most {@code perTask} images, or fewer
   * where that leaves a core idle.
   */
  static int tasks(long files, long perTask, int cores) {
    long round = (long) Math.max(1, cores) * perTask;
    return (int) Math.min(Integer.MAX_VALUE, (files + round - 1) / round * Math.max(1, cores));
  }

  /** The catalog index of one of sql_dl's catalog relations, else null. */
  static CatalogSource.CatalogIndex indexOf(LogicalRelation r) {
    return r.relation() instanceof HadoopFsRelation folder
        && folder.location() instanceof CatalogSource.CatalogIndex index ? index : null;
  }

  /** The catalog relation right below {@code project} (through filters), else null. */
  static LogicalRelation catalogBelow(Project project) {
    LogicalPlan below = project.child();
    while (below instanceof Filter f) {
      below = f.child();
    }
    return below instanceof LogicalRelation r && indexOf(r) != null ? r : null;
  }

  static Attribute column(LogicalRelation r, String name) {
    for (Attribute a : CollectionConverters.asJava(r.output())) {
      if (a.name().equalsIgnoreCase(name)) {
        return a;
      }
    }
    throw new IllegalStateException("an image catalog relation without " + name);
  }

  private static scala.collection.immutable.Seq<String> emptySeq() {
    return scala.collection.immutable.List$.MODULE$.empty();
  }

  private static AbstractPartialFunction<Expression, Expression> replacing(
      Attribute image, Attribute path, org.apache.spark.SparkContext context) {
    return new AbstractPartialFunction<>() {
      @Override
      public boolean isDefinedAt(Expression e) {
        return e instanceof Attribute a && a.exprId().equals(image.exprId());
      }

      @Override
      public <A1 extends Expression, B1> B1 applyOrElse(A1 e, Function1<A1, B1> otherwise) {
        @SuppressWarnings("unchecked")
        B1 result = isDefinedAt(e) ? (B1) ImageBytes.of(path, context) : otherwise.apply(e);
        return result;
      }
    };
  }

  /** {@code plan.transformUp} with {@code rewrite} (null: leave the node as it is). */
  static LogicalPlan transformUp(LogicalPlan plan, Function<LogicalPlan, LogicalPlan> rewrite) {
    return plan.transformUp(new AbstractPartialFunction<LogicalPlan, LogicalPlan>() {
      @Override
      public boolean isDefinedAt(LogicalPlan node) {
        return true;
      }

      @Override
      public <A1 extends LogicalPlan, B1> B1 applyOrElse(A1 node, Function1<A1, B1> otherwise) {
        LogicalPlan rewritten = rewrite.apply(node);
        @SuppressWarnings("unchecked")
        B1 result = (B1) (rewritten != null ? rewritten : node);
        return result;
      }
    });
  }
}
