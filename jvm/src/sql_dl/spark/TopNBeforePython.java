package sql_dl.spark;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.ExprId;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.NamedExpression;
import org.apache.spark.sql.catalyst.expressions.PythonUDF;
import org.apache.spark.sql.catalyst.expressions.SortOrder;
import org.apache.spark.sql.catalyst.plans.logical.GlobalLimit;
import org.apache.spark.sql.catalyst.plans.logical.LocalLimit;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.Offset;
import org.apache.spark.sql.catalyst.plans.logical.Project;
import org.apache.spark.sql.catalyst.plans.logical.Sort;
import org.apache.spark.sql.catalyst.rules.Rule;
import scala.Function1;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractPartialFunction;
import sql_dl.spark.catalog.ImageBytes;

/**
 * Top-N before Python: in {@code ORDER BY <no model output> LIMIT n [OFFSET m]}, Python UDFs
 * (sql_dl's model functions) run, and image files are read ({@link ImageBytes}), on the
 * n + m rows returned instead of on every row.
 *
 * <p>The optimizer leaves a query such as {@code SELECT path, m(image) FROM v ORDER BY path
 * LIMIT 5} as
 * <pre>
 * GlobalLimit 5 [Offset m] LocalLimit 5 [Project] Sort path, true
 *   Project [path, m(image) AS out]
 * </pre>
 * so the UDF is evaluated on every row below the sort. This rule moves the deterministic
 * aliases that call a Python UDF, and that the sort keys do not reference, above the limit:
 * <pre>
 * Project [path, m(image) AS out]       (same output, same expression ids)
 *   GlobalLimit 5 [Offset m] LocalLimit 5 Sort path, true
 *     Project [path, image]
 * </pre>
 * Spark then plans the limit and sort as {@code TakeOrderedAndProject} and the UDF as an
 * {@code ArrowEvalPython} above it. Injected with {@code injectPreCBORule}, it runs once the
 * operator optimizations reached their fixed point (one of them, PushProjectionThroughLimit,
 * would push the projection back under the limit) and before Spark extracts Python UDFs from
 * the plan. Ordering by a UDF's output leaves the plan unchanged. A global sort without a
 * limit gets the same move ({@link #rewrite(Sort)}): its UDFs run once per row, after the
 * sort. Checked on Spark 4.3.0.
 */
public final class TopNBeforePython extends Rule<LogicalPlan> {

  @Override
  public LogicalPlan apply(LogicalPlan plan) {
    return plan.transformDown(new AbstractPartialFunction<LogicalPlan, LogicalPlan>() {
      @Override
      public boolean isDefinedAt(LogicalPlan node) {
        return rewritten(node) != null;
      }

      @Override
      public <A1 extends LogicalPlan, B1> B1 applyOrElse(A1 node, Function1<A1, B1> otherwise) {
        LogicalPlan rewritten = rewritten(node);
        @SuppressWarnings("unchecked")
        B1 result = rewritten != null ? (B1) rewritten : otherwise.apply(node);
        return result;
      }
    });
  }

  private static LogicalPlan rewritten(LogicalPlan node) {
    return node instanceof GlobalLimit limit ? rewrite(limit)
        : node instanceof Sort sort ? rewrite(sort) : null;
  }

  /** The rewritten plan, or null when {@code limit} heads no top-N over deferrable UDFs. */
  static LogicalPlan rewrite(GlobalLimit limit) {
    LogicalPlan node = limit.child();
    Offset offset = null;
    if (node instanceof Offset) {
      offset = (Offset) node;
      node = offset.child();
    }
    if (!(node instanceof LocalLimit)) {
      return null;
    }
    LocalLimit local = (LocalLimit) node;
    node = local.child();
    Project between = null;  // a projection Spark pushed below the limit
    if (node instanceof Project) {
      between = (Project) node;
      node = between.child();
    }
    if (!(node instanceof Sort)) {
      return null;
    }
    Split split = split((Sort) node);
    if (split == null) {
      return null;
    }
    LogicalPlan chain = new LocalLimit(local.limitExpr(), split.sorted());
    if (offset != null) {
      chain = new Offset(offset.offsetExpr(), chain);
    }
    chain = new GlobalLimit(limit.limitExpr(), chain);
    LogicalPlan result = new Project(asScala(split.above()), chain);
    return between == null ? result : new Project(between.projectList(), result);
  }

  /**
   * A global sort without a limit ({@code SELECT path, m(image) FROM v ORDER BY path}): the
   * UDFs move above the sort, or null when they cannot. Below it they would run twice on
   * every row, once more for the range partitioner's sample of the sort keys, and the image
   * bytes would go through the shuffle.
   */
  static LogicalPlan rewrite(Sort sort) {
    Split split = split(sort);
    return split == null ? null : new Project(asScala(split.above()), split.sorted());
  }

  /** A sort with its UDFs taken out ({@code sorted}), and the projection that evaluates
   *  them over its rows ({@code above}: the same output, the same expression ids). */
  private record Split(LogicalPlan sorted, List<NamedExpression> above) {}

  /** {@code sort} split, or null when it is no global sort over a projection with deferrable
   *  UDFs, or is ordered by a UDF's output. */
  private static Split split(Sort sort) {
    if (!sort.global() || !(sort.child() instanceof Project)) {
      return null;
    }
    Project scored = (Project) sort.child();

    List<NamedExpression> deferred = new ArrayList<>();
    List<NamedExpression> kept = new ArrayList<>();
    for (NamedExpression e : asJava(scored.projectList())) {
      Expression expression = (Expression) e;  // every NamedExpression is one
      (callsPython(expression) && expression.deterministic() ? deferred : kept).add(e);
    }
    if (deferred.isEmpty()) {
      return null;
    }
    Set<ExprId> deferredIds = new HashSet<>();
    for (NamedExpression e : deferred) {
      deferredIds.add(e.exprId());
    }
    for (SortOrder order : asJava(sort.order())) {
      if (callsPython(order)) {
        return null;
      }
      for (Attribute a : asJava(order.references().toSeq())) {
        if (deferredIds.contains(a.exprId())) {
          return null;  // ordered by a model's output: every row must be scored
        }
      }
    }

    // Below the sort: the kept columns and what the deferred expressions read.
    List<NamedExpression> below = new ArrayList<>(kept);
    Set<ExprId> belowIds = new HashSet<>();
    for (NamedExpression e : kept) {
      belowIds.add(e.exprId());
    }
    for (NamedExpression e : deferred) {
      for (Attribute a : asJava(((Expression) e).references().toSeq())) {
        if (belowIds.add(a.exprId())) {
          below.add(a);
        }
      }
    }
    List<NamedExpression> above = new ArrayList<>();
    for (NamedExpression e : asJava(scored.projectList())) {
      above.add(deferredIds.contains(e.exprId()) ? e : e.toAttribute());
    }
    return new Split(new Sort(sort.order(), true, new Project(asScala(below), scored.child()),
                              sort.hint()), above);
  }

  /** Whether {@code e} calls Python, or reads an image file ({@link ImageBytes}). */
  private static boolean callsPython(Expression e) {
    return e.exists(x -> x instanceof PythonUDF || ImageBytes.is(x));
  }

  private static <T> List<T> asJava(scala.collection.Seq<T> seq) {
    return CollectionConverters.asJava(seq);
  }

  private static <T> scala.collection.immutable.Seq<T> asScala(List<T> list) {
    return CollectionConverters.asScala(list).toSeq();
  }
}
