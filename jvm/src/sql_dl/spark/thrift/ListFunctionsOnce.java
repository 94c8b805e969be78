package sql_dl.spark.thrift;

import java.sql.DatabaseMetaData;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Pattern;

import org.apache.hadoop.hive.ql.security.authorization.plugin.HiveOperationType;
import org.apache.hadoop.hive.ql.security.authorization.plugin.HivePrivilegeObjectUtils;
import org.apache.hive.service.cli.HiveSQLException;
import org.apache.hive.service.cli.OperationState;
import org.apache.hive.service.cli.session.HiveSession;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.catalog.SessionCatalog;
import org.apache.spark.sql.catalyst.expressions.ExpressionInfo;
import org.apache.spark.sql.hive.thriftserver.HiveThriftServer2;
import org.apache.spark.sql.hive.thriftserver.SparkGetFunctionsOperation;
import scala.Tuple2;
import scala.jdk.javaapi.CollectionConverters;

/**
 * JDBC {@code DatabaseMetaData.getFunctions} as the JDBC specification defines it, for the
 * Thrift Server: each function once, and the function name pattern read as a JDBC pattern.
 *
 * <p>Spark's own operation lists every matching database's functions, and temporary and
 * built-in functions belong to none, so with two databases each of them came twice. It also
 * passed the JDBC pattern to Spark's {@code SHOW FUNCTIONS} matching, where {@code %} and
 * {@code _} are not wildcards. Here:
 * <ul>
 *   <li>{@code %} matches any run of characters, {@code _} any one character, a backslash
 *   escapes either, and {@code *} stays a wildcard as in Spark; matching ignores case, as
 *   Spark's function names do;</li>
 *   <li>a persistent function is listed in its own database; a temporary or built-in one
 *   (Spark names them {@code system.session.f} and {@code system.builtin.f}) once,
 *   under the current database when it matches the schema pattern, else the first that
 *   does.</li>
 * </ul>
 * Remarks and the other columns are Spark's.
 */
public class ListFunctionsOnce extends SparkGetFunctionsOperation {

  private final SparkSession session;
  private final String schemaName;
  private final String functionName;

  public ListFunctionsOnce(SparkSession session, HiveSession parentSession, String catalogName,
                           String schemaName, String functionName) {
    super(session, parentSession, catalogName, schemaName, functionName);
    this.session = session;
    this.schemaName = schemaName;
    this.functionName = functionName;
  }

  /** The regular expression of a JDBC name pattern ({@code null} matches every name). */
  static Pattern jdbcPattern(String pattern) {
    StringBuilder regex = new StringBuilder();
    String text = pattern == null ? "%" : pattern;
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      if (c == '\\' && i + 1 < text.length()) {
        regex.append(Pattern.quote(String.valueOf(text.charAt(++i))));
      } else if (c == '%' || c == '*') {
        regex.append(".*");
      } else if (c == '_') {
        regex.append('.');
      } else {
        regex.append(Pattern.quote(String.valueOf(c)));
      }
    }
    return Pattern.compile(regex.toString(), Pattern.CASE_INSENSITIVE | Pattern.DOTALL);
  }

  @Override
  public void runInternal() {
    String statement = "Listing functions 'schemaPattern : " + schemaName + ", functionName : "
        + functionName + "'";
    ClassLoader previous = Thread.currentThread().getContextClassLoader();
    Thread.currentThread().setContextClassLoader(session.sharedState().jarClassLoader());
    try {
      setState(OperationState.RUNNING);
      SessionCatalog catalog = catalog();
      List<String> databases = new ArrayList<>(
          CollectionConverters.asJava(catalog.listDatabases(convertSchemaPattern(schemaName))));
      if (isAuthV2Enabled()) {
        authorizeMetaGets(HiveOperationType.GET_FUNCTIONS,
            HivePrivilegeObjectUtils.getHivePrivDbObjects(databases), statement);
      }
      HiveThriftServer2.eventManager().onStatementStart(statementId(),
          getParentSession().getSessionHandle().getSessionId().toString(), statement,
          statementId(), getParentSession().getUserName());
      String current = catalog.getCurrentDatabase();
      if (databases.remove(current)) {
        databases.add(0, current);
      }
      Pattern names = jdbcPattern(functionName);
      Set<String> listed = new HashSet<>();
      for (String database : databases) {
        List<Tuple2<FunctionIdentifier, String>> functions = new ArrayList<>(
            CollectionConverters.asJava(catalog.listFunctions(database, "*")));
        functions.sort(Comparator.comparing(f -> f._1().funcName()));
        for (Tuple2<FunctionIdentifier, String> function : functions) {
          FunctionIdentifier id = function._1();
          boolean own = id.database().isDefined() && id.database().get().equals(database);
          if (!names.matcher(id.funcName()).matches() || (!own && !listed.add(id.funcName()))) {
            continue;
          }
          ExpressionInfo info = catalog.lookupFunctionInfo(id);
          rowSet.addRow(new Object[] {
              DEFAULT_HIVE_CATALOG, database, id.funcName(),
              "Usage: " + info.getUsage() + "\nExtended Usage:" + info.getExtended(),
              DatabaseMetaData.functionResultUnknown, info.getClassName()});
        }
      }
      setState(OperationState.FINISHED);
      HiveThriftServer2.eventManager().onStatementFinish(statementId());
    } catch (Exception e) {
      fail(e);
      throw ListFunctionsOnce.<RuntimeException>unchecked(e);
    } finally {
      Thread.currentThread().setContextClassLoader(previous);
    }
  }

  /** Rethrows {@code e} as it is (a HiveSQLException reaches the client with its message),
   *  although Spark's {@code runInternal}, which this overrides, declares no exception. */
  @SuppressWarnings("unchecked")
  private static <E extends Exception> E unchecked(Exception e) throws E {
    throw (E) e;
  }

  private void fail(Exception e) {
    try {
      setState(OperationState.ERROR);
    } catch (HiveSQLException ignored) {
      // already in a final state
    }
    HiveThriftServer2.eventManager().onStatementError(statementId(), String.valueOf(
        e.getMessage()), org.apache.spark.util.Utils.exceptionString(e));
  }
}
