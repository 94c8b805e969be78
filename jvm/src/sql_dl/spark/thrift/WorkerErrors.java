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

  private static final String TRACEBACK = "Traceback (most recent call last):";
  private static final String OURS = "sql_dl.errors.";

  private WorkerErrors() {}

  /** {@code error} with a Python worker's error in its causes as one line; else itself.
   *  The worker's traceback is the message of Spark's {@code PythonException} (local
   *  executors), or part of a {@code [PYTHON_EXCEPTION]} or job failure's message
   *  (executors in other JVMs). */
  static HiveSQLException oneLine(HiveSQLException error) {
    for (Throwable cause = error; cause != null; cause = cause.getCause()) {
      if (cause instanceof SparkThrowable spark
          && CheckedArguments.CONDITION.equals(spark.getCondition())) {
        return new HiveSQLException(cause.getMessage(), error.getSQLState(),
            error.getErrorCode());
      }
      String line = cause.getMessage() == null ? null : exceptionLine(cause.getMessage());
      if (line != null) {
        return new HiveSQLException(line, error.getSQLState(), error.getErrorCode());
      }
    }
    return error;
  }

  /** Throws {@code e}, checked or not. */
  @SuppressWarnings("unchecked")
  static <E extends Throwable> RuntimeException rethrown(Throwable e) throws E {
    throw (E) e;
  }

  /** The line of a Python traceback in {@code text} that names sql_dl's error, else the
   *  traceback's exception line; null when {@code text} holds no traceback. */
  static String exceptionLine(String text) {
    int start = text.lastIndexOf(TRACEBACK);
    if (start < 0) {
      return null;
    }
    String last = null;
    for (String line : text.substring(start + TRACEBACK.length()).split("\n")) {
      if (line.startsWith(OURS)) {
        return line.substring(OURS.length()).strip();
      }
      if (line.startsWith("\tat ") || line.startsWith("Driver stacktrace")) {
        break;  // Java's stack after the traceback
      }
      // an exception line starts at the margin; the traceback's frames are indented
      if (!line.isBlank() && !Character.isWhitespace(line.charAt(0))) {
        last = line.strip();
      }
    }
    return last;
  }
}
