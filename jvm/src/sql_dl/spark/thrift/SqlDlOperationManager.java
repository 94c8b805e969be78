package sql_dl.spark.thrift;

import java.lang.reflect.Field;
import java.util.Map;

import org.apache.hive.service.Service;
import org.apache.hive.service.cli.CLIService;
import org.apache.hive.service.cli.operation.ExecuteStatementOperation;
import org.apache.hive.service.cli.operation.GetFunctionsOperation;
import org.apache.hive.service.cli.operation.OperationManager;
import org.apache.hive.service.cli.session.HiveSession;
import org.apache.hive.service.cli.session.SessionManager;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.hive.thriftserver.HiveThriftServer2;
import org.apache.spark.sql.hive.thriftserver.SparkSQLSessionManager;
import org.apache.spark.sql.hive.thriftserver.server.SparkSQLOperationManager;
import sql_dl.spark.access.AccessPolicy;

/**
 * The Thrift Server's operation manager with {@link ListFunctionsOnce} for JDBC
 * {@code getFunctions}, and {@link ConciseStatement} for statements ({@link AuditedStatement}
 * for an audit trail);
 * every other operation is Spark's. Before each statement, {@link AccessPolicy#prepare}
 * makes the session's user name canonical and puts back settings analysts may not change.
 *
 * <p>Spark creates its manager inside {@code HiveThriftServer2.init} with no hook, so
 * {@link #install} swaps it in, by reflection on two private fields, on a started server that
 * has no session yet ({@code sql-dl serve} does so before it announces that it is ready).
 */
public class SqlDlOperationManager extends SparkSQLOperationManager {

  /** Spark's manager finds its operation map as a field of its direct superclass, which for
   *  a subclass is Spark's manager itself: point it at the map where it really is. */
  private final boolean audit;

  private SqlDlOperationManager(boolean audit) throws ReflectiveOperationException {
    this.audit = audit;
    Field operations = OperationManager.class.getDeclaredField("handleToOperation");
    operations.setAccessible(true);
    set(SparkSQLOperationManager.class, this, "handleToOperation", operations.get(this));
  }

  /** Spark's {@code newExecuteStatementOperation} (4.3.0), with a {@link ConciseStatement}
   *  ({@link AuditedStatement} for an audit trail). */
  @Override
  public synchronized ExecuteStatementOperation newExecuteStatementOperation(
      HiveSession parentSession, String statement, Map<String, String> confOverlay,
      boolean async, long queryTimeout) {
    SparkSession session = session(parentSession);
    AccessPolicy.prepare(parentSession, session);
    boolean runInBackground = async && Boolean.parseBoolean(
        session.sessionState().conf().getConfString("spark.sql.hive.thriftServer.async", "true"));
    ConciseStatement operation = audit
        ? new AuditedStatement(
            session, parentSession, statement, confOverlay, runInBackground, queryTimeout)
        : new ConciseStatement(
            session, parentSession, statement, confOverlay, runInBackground, queryTimeout);
    handleToOperation().put(operation.getHandle(), operation);
    return operation;
  }

  @Override
  public synchronized GetFunctionsOperation newGetFunctionsOperation(
      HiveSession parentSession, String catalogName, String schemaName, String functionName) {
    AccessPolicy.prepare(parentSession, session(parentSession));
    ListFunctionsOnce operation = new ListFunctionsOnce(
        session(parentSession), parentSession, catalogName, schemaName, functionName);
    handleToOperation().put(operation.getHandle(), operation);
    return operation;
  }

  private SparkSession session(HiveSession parentSession) {
    SparkSession session = sessionToContexts().get(parentSession.getSessionHandle());
    if (session == null) {
      throw new IllegalStateException("Session handle " + parentSession.getSessionHandle()
          + " has not been initialized or has already been closed.");
    }
    return session;
  }

  /**
   * Makes {@code server} use this manager for the sessions it opens from now on; with
   * {@code audit}, its statements are {@link AuditedStatement}s.
   *
   * @throws IllegalStateException if a session is already open, or the server is not
   *     the one this was written for (Spark 4.1 to 4.3)
   */
  public static void install(HiveThriftServer2 server, boolean audit)
      throws ReflectiveOperationException {
    SessionManager sessions = null;
    for (Service service : server.getServices()) {
      if (service instanceof CLIService) {
        sessions = ((CLIService) service).getSessionManager();
      }
    }
    if (!(sessions instanceof SparkSQLSessionManager)) {
      throw new IllegalStateException("no SparkSQLSessionManager in " + server.getServices());
    }
    if (!(sessions.getOperationManager() instanceof SparkSQLOperationManager)) {
      throw new IllegalStateException("unexpected operation manager "
          + sessions.getOperationManager());
    }
    SparkSQLOperationManager spark = (SparkSQLOperationManager) sessions.getOperationManager();
    if (!spark.sessionToContexts().isEmpty()) {
      throw new IllegalStateException("the server already has open sessions");
    }
    SqlDlOperationManager manager = new SqlDlOperationManager(audit);
    set(SessionManager.class, sessions, "operationManager", manager);
    set(SparkSQLSessionManager.class, sessions, "sparkSqlOperationManager", manager);
    AccessPolicy.jdbcSessions(session -> manager.sessionToContexts().containsValue(session));
  }

  private static void set(Class<?> owner, Object target, String name, Object value)
      throws ReflectiveOperationException {
    Field field = owner.getDeclaredField(name);
    field.setAccessible(true);
    field.set(target, value);
  }
}
