package sql_dl.spark;

import java.util.ArrayList;
import java.util.List;

import org.apache.spark.sql.catalyst.rules.Rule;
import org.apache.spark.sql.execution.ColumnarRule;
import org.apache.spark.sql.execution.FilterExec;
import org.apache.spark.sql.execution.GlobalLimitExec;
import org.apache.spark.sql.execution.LocalLimitExec;
import org.apache.spark.sql.execution.ProjectExec;
import org.apache.spark.sql.execution.SparkPlan;
import org.apache.spark.sql.execution.python.EvalPythonExec;
import scala.Function1;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractPartialFunction;

/**
 * Puts a {@link ReleasePythonWorkerExec} above every Python evaluation ({@code ArrowEvalPython},
 * {@code BatchEvalPython}) whose input comes through a limit, as Spark plans
 * {@code SELECT ..., m(image) FROM v LIMIT n}:
 * <pre>
 * CollectLimit n
 *   Project [..., pythonUDF0 AS ...]
 *     ReleasePythonWorker          (added)
 *       ArrowEvalPython [m(image)]
 *         LocalLimit n
 * </pre>
 * A physical rule, run before Spark collapses code generation stages (Spark offers physical
 * rules to extensions through {@code injectColumnar}; this one changes no columnar
 * transition).
 */
public final class ReleasePythonWorkers extends ColumnarRule {

  @Override
  public Rule<SparkPlan> preColumnarTransitions() {
    return new Rule<SparkPlan>() {
      @Override
      public SparkPlan apply(SparkPlan plan) {
        return plan.transformUp(new AbstractPartialFunction<SparkPlan, SparkPlan>() {
          @Override
          public boolean isDefinedAt(SparkPlan node) {
            return !(node instanceof ReleasePythonWorkerExec)
                && CollectionConverters.asJava(node.children()).stream()
                    .anyMatch(ReleasePythonWorkers::boundedPython);
          }

          @Override
          public <A1 extends SparkPlan, B1> B1 applyOrElse(A1 node, Function1<A1, B1> otherwise) {
            if (!isDefinedAt(node)) {
              return otherwise.apply(node);
            }
            List<SparkPlan> children = new ArrayList<>();
            for (SparkPlan child : CollectionConverters.asJava(node.children())) {
              children.add(boundedPython(child) ? new ReleasePythonWorkerExec(child) : child);
            }
            @SuppressWarnings("unchecked")
            B1 result = (B1) node.withNewChildren(CollectionConverters.asScala(children).toSeq());
            return result;
          }
        });
      }
    };
  }

  /** Whether {@code node} evaluates Python UDFs on rows that come through a limit. */
  static boolean boundedPython(SparkPlan node) {
    if (!(node instanceof EvalPythonExec)) {
      return false;
    }
    SparkPlan input = node.children().head();
    while (input instanceof ProjectExec || input instanceof FilterExec) {
      input = input.children().head();
    }
    return input instanceof LocalLimitExec || input instanceof GlobalLimitExec;
  }
}
