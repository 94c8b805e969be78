package sql_dl.spark.thrift;

import org.apache.hive.service.cli.HiveSQLException;
import org.apache.spark.SparkThrowable;
import sql_dl.spark.CheckedArguments;

/**
 * A Python worker's error as one line for JDBC clients and the audit log: the exception line
 * of its traceback ({@code FunctionArgumentError: ...}, with sql_dl's module dropped), not the
 * traceback, which stays in Spark's log. A function call that {@link CheckedArguments}
 * refused is its message too, without the Thrift Server's {@code Error running query:
 * [condition] class:} prefix.
 */
final class WorkerErrors {

  private static final String PYTHON_EXCEPTION = "org.apache.spark.api.python.PythonException";
  private static final String OURS = "sql_dl.errors.";

  private WorkerErrors() {}

  /** {@code error} with a Python worker's error in its causes as one line; else itself. */
  static HiveSQLException oneLine(HiveSQLException error) {
    for (Throwable cause = error; cause != null; cause = cause.getCause()) {
      if (cause instanceof SparkThrowable spark
          && CheckedArguments.CONDITION.equals(spark.getCondition())) {
        return new HiveSQLException(cause.getMessage(), error.getSQLState(),
            error.getErrorCode());
      }
      if (cause.getClass().getName().equals(PYTHON_EXCEPTION) && cause.getMessage() != null) {
        String line = exceptionLine(cause.getMessage());
        if (line != null) {
          return new HiveSQLException(line, error.getSQLState(), error.getErrorCode());
        }
      }
      if (cause.getCause() == cause) {
        break;
      }
    }
    return error;
  }

  /** Throws {@code e}, checked or not. */
  @SuppressWarnings("unchecked")
  static <E extends Throwable> RuntimeException rethrown(Throwable e) throws E {
    throw (E) e;
  }

  /** The last line of a traceback that names sql_dl's error, else its last exception line. */
  static String exceptionLine(String traceback) {
    String last = null;
    for (String line : traceback.split("\n")) {
      if (line.startsWith(OURS)) {
        return line.substring(OURS.length()).strip();
      }
      // an exception line starts at the margin; the traceback's frames are indented
      if (!line.isBlank() && !Character.isWhitespace(line.charAt(0))
          && !line.startsWith("Traceback (most recent call last)")) {
        last = line.strip();
      }
    }
    return last;
  }
}
