package sql_dl.spark.plugin;

import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.SparkSession;
import sql_dl.spark.CheckedArguments;

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

  SessionRegistration(SparkSession session, String manifest) {
    this.session = session;
    this.manifest = manifest;
  }

  /** Registers the manifest in the session unless done; {@code statement} is the text of the
   *  statement being parsed (null for a name or an expression). Throws the manifest's problems
   *  to the session's first statement that is not a USE or SET. */
  void ensure(String statement) {
    if (state == State.DONE || state == State.FAILED) {
      return;
    }
    synchronized (this) {
      if (registering == Thread.currentThread()) {
        return;
      }
      if (state == State.NEW) {
        registering = Thread.currentThread();
        try {
          Registrations.current(session, manifest).applyTo(session);
          state = State.DONE;
          return;
        } catch (RuntimeException e) {
          problem = Registrations.describe(manifest, e);
          ManifestPlugin.LOG.warn("{}", problem, e instanceof PluginError ? null : e);
          state = State.FAILED_UNREPORTED;
        } finally {
          registering = null;
        }
      }
      if (state == State.FAILED_UNREPORTED && statement != null
          && !ManifestPlugin.SESSION_SETUP.matcher(statement).matches()) {
        state = State.FAILED;
        throw unchecked(new AnalysisException(CheckedArguments.CONDITION,
            new scala.collection.immutable.Map.Map1<String, String>("errorMessage", problem)));
      }
    }
  }

  @SuppressWarnings("unchecked")
  private static <E extends Throwable> RuntimeException unchecked(Throwable e) throws E {
    throw (E) e;
  }
}
