package sql_dl.spark;

import java.io.Serializable;

import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.SortOrder;
import org.apache.spark.sql.catalyst.plans.physical.Partitioning;
import org.apache.spark.sql.execution.SparkPlan;
import scala.collection.AbstractIterator;
import scala.collection.Iterator;
import scala.collection.immutable.IndexedSeq;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import scala.reflect.ClassTag$;
import scala.runtime.AbstractFunction1;

/**
 * Reads one row ahead of its consumer from a Python evaluation whose input is bounded (a
 * {@code LocalLimit} below it), so that Python workers survive {@code LIMIT} queries.
 *
 * <p>Spark reuses a Python worker only if its task read the worker's output to the end.
 * {@code SELECT path, m(image) FROM v LIMIT 20} (every BI preview) stops after the 20th row,
 * one read short of the end, and the worker, with its loaded model, is killed; the next query
 * starts a new one and loads the model again. Reading ahead makes that last read as the 20th
 * row is handed on. The input is at most the limit's rows, so nothing more is scored; each
 * row handed on is a copy (at most the limit's rows per task).
 */
public final class ReleasePythonWorkerExec extends SparkPlan {

  private final SparkPlan child;

  public ReleasePythonWorkerExec(SparkPlan child) {
    this.child = child;
  }

  public SparkPlan child() {
    return child;
  }

  @Override
  public Seq<Attribute> output() {
    return child.output();
  }

  @Override
  public Partitioning outputPartitioning() {
    return child.outputPartitioning();
  }

  @Override
  public Seq<SortOrder> outputOrdering() {
    return child.outputOrdering();
  }

  @Override
  public RDD<InternalRow> doExecute() {
    return child.execute().mapPartitionsInternal(new ReadAhead(), true,
        ClassTag$.MODULE$.apply(InternalRow.class));
  }

  @Override
  public Seq<SparkPlan> children() {
    return CollectionConverters.asScala(java.util.List.of(child)).toList();
  }

  @Override
  public SparkPlan withNewChildrenInternal(IndexedSeq<SparkPlan> children) {
    return new ReleasePythonWorkerExec(children.apply(0));
  }

  @Override
  public String simpleStringWithNodeId() {
    return nodeName();
  }

  @Override
  public String verboseString(int maxFields) {
    return simpleString(maxFields);
  }

  @Override
  public int productArity() {
    return 1;
  }

  @Override
  public Object productElement(int n) {
    if (n != 0) {
      throw new IndexOutOfBoundsException(String.valueOf(n));
    }
    return child;
  }

  @Override
  public boolean canEqual(Object other) {
    return other instanceof ReleasePythonWorkerExec;
  }

  @Override
  public boolean equals(Object other) {
    return other instanceof ReleasePythonWorkerExec
        && ((ReleasePythonWorkerExec) other).child.equals(child);
  }

  @Override
  public int hashCode() {
    return 31 * ReleasePythonWorkerExec.class.hashCode() + child.hashCode();
  }

  /** Each partition's rows, one read ahead. */
  private static final class ReadAhead
      extends AbstractFunction1<Iterator<InternalRow>, Iterator<InternalRow>>
      implements Serializable {

    @Override
    public Iterator<InternalRow> apply(Iterator<InternalRow> rows) {
      return new AbstractIterator<InternalRow>() {
        private InternalRow next;
        private boolean started;

        private void advance() {
          next = rows.hasNext() ? rows.next().copy() : null;
          started = true;
        }

        @Override
        public boolean hasNext() {
          if (!started) {
            advance();
          }
          return next != null;
        }

        @Override
        public InternalRow next() {
          if (!hasNext()) {
            throw new java.util.NoSuchElementException();
          }
          InternalRow row = next;
          advance();
          return row;
        }
      };
    }
  }
}
