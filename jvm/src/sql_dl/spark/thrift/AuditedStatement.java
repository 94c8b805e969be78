package sql_dl.spark.thrift;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.hive.service.cli.FetchOrientation;
import org.apache.hive.service.cli.HiveSQLException;
import org.apache.hive.service.cli.OperationStatus;
import org.apache.hive.service.cli.RowSetFactory;
import org.apache.hive.service.cli.session.HiveSession;
import org.apache.hive.service.rpc.thrift.TRowSet;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.hive.thriftserver.SparkExecuteStatementOperation;

/**
 * Spark's statement operation, which also keeps what an audit trail needs and Spark's records
 * of statements lack: the rows the client fetched, the outcome before the operation closed
 * (Spark's record then says only CLOSED), the error, and the session's authenticated user
 * and client address. {@link #drain} hands each statement over once, when it closes.
 */
public class AuditedStatement extends SparkExecuteStatementOperation {

  /** One closed statement: times in epoch milliseconds, {@code error} null unless the
   *  outcome is ERROR. */
  public record Closed(String statementId, String user, String client, String statement,
                       long created, long rows, String outcome, String error) {}

  private static final ConcurrentLinkedQueue<Closed> CLOSED = new ConcurrentLinkedQueue<>();
  private static final Set<AuditedStatement> OPEN = ConcurrentHashMap.newKeySet();

  private final String text;
  private final long created = System.currentTimeMillis();
  private final AtomicLong rows = new AtomicLong();

  public AuditedStatement(SparkSession session, HiveSession parentSession, String statement,
                          Map<String, String> confOverlay, boolean runInBackground,
                          long queryTimeout) {
    super(session, parentSession, statement, confOverlay, runInBackground, queryTimeout);
    this.text = statement;
    OPEN.add(this);
  }

  /** Counts the rows sent; fetching from the first row again starts the count again. */
  @Override
  public TRowSet getNextRowSet(FetchOrientation orientation, long maxRows) {
    TRowSet rowSet = super.getNextRowSet(orientation, maxRows);
    try {
      int sent = RowSetFactory.create(rowSet, getProtocolVersion()).numRows();
      if (orientation == FetchOrientation.FETCH_FIRST) {
        rows.set(sent);
      } else {
        rows.addAndGet(sent);
      }
    } catch (org.apache.thrift.TException e) {
      throw new IllegalStateException("cannot count the rows of a result set", e);
    }
    return rowSet;
  }

  @Override
  public void close() {
    OperationStatus status = getStatus();
    try {
      super.close();
    } finally {
      if (OPEN.remove(this)) {
        CLOSED.add(record(status));
      }
    }
  }

  private Closed record(OperationStatus status) {
    HiveSQLException error = status.getOperationException();
    return new Closed(statementId(), getParentSession().getUserName(),
        getParentSession().getIpAddress(), text, created, rows.get(),
        status.getState().toString(), error == null ? null : error.getMessage());
  }

  /**
   * The statements closed since the last call, in the order they closed; with
   * {@code andOpen} (as the server stops), then those still open, as they are now, which
   * are not handed over again when they close.
   */
  public static Closed[] drain(boolean andOpen) {
    List<Closed> drained = new ArrayList<>();
    for (Closed closed; (closed = CLOSED.poll()) != null; ) {
      drained.add(closed);
    }
    if (andOpen) {
      for (AuditedStatement open : OPEN) {
        if (OPEN.remove(open)) {
          drained.add(open.record(open.getStatus()));
        }
      }
    }
    return drained.toArray(new Closed[0]);
  }
}
