package sql_dl.spark.thrift;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.hive.service.cli.FetchOrientation;
import org.apache.hive.service.cli.HiveSQLException;
import org.apache.hive.service.cli.OperationStatus;
import org.apache.hive.service.cli.RowSetFactory;
import org.apache.hive.service.cli.session.HiveSession;
import org.apache.hive.service.rpc.thrift.TRowSet;
import org.apache.spark.sql.SparkSession;

/**
 * Spark's statement operation, which also keeps what an audit trail needs and Spark's records
 * of statements lack: the rows the client fetched, the outcome before the operation closed
 * (Spark's record then says only CLOSED), the error, and the session's authenticated user
 * and client address. {@link #nextStarted} hands each statement over as it is about to run,
 * {@link #drain} once more when it closes.
 */
public class AuditedStatement extends ConciseStatement {

  /** One closed statement: times in epoch milliseconds, {@code error} null unless the
   *  outcome is ERROR. */
  public record Closed(String statementId, String user, String client, String statement,
                       long created, long rows, String outcome, String error) {}

  /** A statement about to run: {@code at} in epoch milliseconds. */
  public record Started(String statementId, String user, String client, String statement,
                        long at) {}

  /** How long a statement waits for its "started" line to be written, at most. */
  static final long START_WAIT_MS = 2000;

  private static final ConcurrentLinkedQueue<Closed> CLOSED = new ConcurrentLinkedQueue<>();
  private static final Set<AuditedStatement> OPEN = ConcurrentHashMap.newKeySet();
  private static final BlockingQueue<Started> STARTED = new LinkedBlockingQueue<>();
  private static final Map<String, CountDownLatch> UNWRITTEN = new ConcurrentHashMap<>();

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

  /**
   * Hands the statement to the audit log ({@link #nextStarted}) and waits until its line is
   * written ({@link #written}), at most {@link #START_WAIT_MS}, before it runs: a statement
   * that ends the process has its line.
   */
  @Override
  public void runInternal() {
    CountDownLatch written = new CountDownLatch(1);
    UNWRITTEN.put(statementId(), written);
    STARTED.add(new Started(statementId(), getParentSession().getUserName(),
        getParentSession().getIpAddress(), text, System.currentTimeMillis()));
    try {
      written.await(START_WAIT_MS, TimeUnit.MILLISECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } finally {
      UNWRITTEN.remove(statementId());
    }
    super.runInternal();
  }

  /** The next statement about to run, waiting up to {@code timeoutMs} (null if none). */
  public static Started nextStarted(long timeoutMs) throws InterruptedException {
    return STARTED.poll(timeoutMs, TimeUnit.MILLISECONDS);
  }

  /** Lets the statement {@code statementId} run: its "started" line is written. */
  public static void written(String statementId) {
    CountDownLatch latch = UNWRITTEN.get(statementId);
    if (latch != null) {
      latch.countDown();
    }
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
