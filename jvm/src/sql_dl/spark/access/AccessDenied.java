package sql_dl.spark.access;

/**
 * A statement that {@code sql-dl serve}'s access policy refuses. It reaches the JDBC client
 * as one line, {@code AccessDenied: <what the statement does>; only admins may. Received:
 * user=<who>}, through the Thrift Server's "Error running query: " + the exception's text.
 *
 * <p>A {@link SecurityException}, not one of the exceptions Spark reports as its own internal
 * errors, so Spark passes it on as it is.
 */
public final class AccessDenied extends SecurityException {

  private static final long serialVersionUID = 1L;

  /** {@code why}: what the statement does and who may, and who ran it. */
  public AccessDenied(String why) {
    super("AccessDenied: " + why);
  }

  /** The message alone: it names the refusal already (Spark's records of statements and
   *  the client show one or the other). */
  @Override
  public String toString() {
    return getMessage();
  }
}
