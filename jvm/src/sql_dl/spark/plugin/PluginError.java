package sql_dl.spark.plugin;

/** A problem of plugin mode that its message says all of (the manifest's problems, a Python
 *  without sql_dl, versions that differ): logged without a stack trace. */
final class PluginError extends RuntimeException {

  private static final long serialVersionUID = 1L;

  PluginError(String message) {
    super(message);
  }
}
