package sql_dl.spark.thrift;

import java.util.Map;

import org.apache.hive.service.cli.HiveSQLException;
import org.apache.hive.service.cli.session.HiveSession;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.hive.thriftserver.SparkExecuteStatementOperation;

/**
 * Spark's statement operation, whose error, when a Python worker raised it, is one line
 * ({@link WorkerErrors}) for the client and the audit log instead of the worker's traceback,
 * which stays in Spark's log.
 */
public class ConciseStatement extends SparkExecuteStatementOperation {

  public ConciseStatement(SparkSession session, HiveSession parentSession, String statement,
                          Map<String, String> confOverlay, boolean runInBackground,
                          long queryTimeout) {
    super(session, parentSession, statement, confOverlay, runInBackground, queryTimeout);
  }

  /** A statement run in the foreground throws its error from here. */
  @Override
  public void runInternal() {
    try {
      super.runInternal();
    } catch (Exception e) {  // Scala declares no checked exceptions
      if (e instanceof HiveSQLException h) {
        HiveSQLException line = WorkerErrors.oneLine(h);
        if (line != h) {  // the statement's status (the audit log's error) says it too
          super.setOperationException(line);
        }
        throw WorkerErrors.rethrown(line);
      }
      throw WorkerErrors.rethrown(e);
    }
  }

  /** A statement run in the background keeps its error here. */
  @Override
  protected void setOperationException(HiveSQLException error) {
    super.setOperationException(error == null ? null : WorkerErrors.oneLine(error));
  }
}
