package sql_dl.spark.plugin;

import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.CurrentUserContext;
import sql_dl.spark.CheckedArguments;
import sql_dl.spark.access.AccessPolicy;
import sql_dl.spark.similarity.SimilarityIndex;

/**
 * One session's registration of the manifest: done at the session's first parser call, once.
 * The thread that registers passes through its own parser calls (registering a view parses
 * its columns); other threads of the session wait for it.
 */
final class SessionRegistration {

  private enum State { NEW, DONE, FAILED_UNREPORTED, FAILED }

  private final SparkSession session;
  private final String manifest;
  private volatile State state = State.NEW;
  private Thread registering;
  private String problem;
  private volatile boolean governed;  // the manifest that failed has an access section

  SessionRegistration(SparkSession session, String manifest) {
    this.session = session;
    this.manifest = manifest;
  }

  /** Registers the manifest in the session unless done; {@code statement} is the text of the
   *  statement being parsed (null for a name or an expression). Throws the manifest's problems
   *  to the session's first statement that is not a USE or SET. */
  void ensure(String statement) {
    if (state == State.DONE || (state == State.FAILED && !refusing())) {
      if (statement != null) {
        AccessPolicy.prepareStatement(session);
      }
      return;
    }
    synchronized (this) {
      if (registering == Thread.currentThread()) {
        return;
      }
      if (state == State.NEW && "true".equals(session.conf().get(
          SimilarityIndex.INTERNAL_SESSION_CONF, "false"))) {
        state = State.DONE;  // an index's own session: a copy of a registered one
        return;
      }
      if (state == State.NEW || refusing()) {  // a refused session tries again each time
        registering = Thread.currentThread();
        try {
          Registrations.current(session, manifest).applyTo(session);
          state = State.DONE;
          if (statement != null) {
            AccessPolicy.prepareStatement(session);
          }
          return;
        } catch (RuntimeException e) {
          problem = Registrations.describe(manifest, e);
          if (state == State.NEW) {
            ManifestPlugin.LOG.warn("{}", problem, e instanceof PluginError ? null : e);
            governed = Registrations.declaresAccess(session, manifest);
            state = State.FAILED_UNREPORTED;
          }
        } finally {
          registering = null;
        }
      }
      if (statement != null && (refusing() || (state == State.FAILED_UNREPORTED
          && !ManifestPlugin.SESSION_SETUP.matcher(statement).matches()))) {
        state = State.FAILED;  // reported: the session goes on without the manifest
        throw unchecked(new AnalysisException(CheckedArguments.CONDITION,
            new scala.collection.immutable.Map.Map1<String, String>("errorMessage", problem)));
      }
    }
  }

  /**
   * Whether the session's statements are refused as long as the manifest cannot be
   * registered: a user's statements (a JDBC session of a Thrift Server) on a governed server,
   * one whose manifest has an access section, that was started with restricted mode (as
   * {@code sql-dl spark-conf} sets it for such a manifest) or that enforced an access policy
   * already; its analysts must not get a session that no policy restricts.
   */
  private boolean refusing() {
    return state != State.DONE && CurrentUserContext.CURRENT_USER().get() != null
        && (governed || AccessPolicy.installed() || "true".equals(session.sparkContext()
                .getConf().get("spark.sql.restrictedMode.enabled", "false")));
  }

  @SuppressWarnings("unchecked")
  private static <E extends Throwable> RuntimeException unchecked(Throwable e) throws E {
    throw (E) e;
  }
}
