package sql_dl.spark.plugin;

import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Pattern;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Plugin mode: with {@code spark.sql_dl.manifest} set (a path or Hadoop URI; see
 * {@code sql-dl spark-conf}), every session of any Spark SQL entry point that loads sql_dl's
 * extension ({@code spark-sql}, the Thrift Server, Spark Connect, Kyuubi's engines) gets the
 * manifest's functions, image views and system views before its first statement runs, with no
 * sql_dl code in a Python driver (there may be none).
 *
 * <p>The hook is the session's SQL parser, which sees every statement first (and table and
 * function names of DataFrame calls): the extension wraps it ({@link #parser}), and the first
 * call in a session registers the manifest ({@link SessionRegistration}). What to register
 * comes from the manifest's {@link Registration}, made once per manifest by a short Python
 * call ({@link PythonPlanner}) and made again when the manifest or a model file changes.
 *
 * <p>A manifest that cannot be registered fails the session's first statement (that is not
 * the {@code USE} or {@code SET} a client sends as it connects) with the manifest's one-line
 * problems; the session's later statements run without sql_dl's functions, so a broken
 * manifest never keeps a server from starting nor other databases from working.
 */
public final class ManifestPlugin {

  /** The manifest of plugin mode: a local path or a Hadoop URI (hdfs://, s3a://, ...). */
  public static final String MANIFEST_CONF = "spark.sql_dl.manifest";
  /** The Python that plans the manifest on the driver (it must have sql_dl). */
  public static final String PYTHON_CONF = "spark.sql_dl.python";

  static final Logger LOG = LoggerFactory.getLogger(ManifestPlugin.class);
  /** Statements a client sends as it connects, which the manifest's problems do not fail. */
  static final Pattern SESSION_SETUP = Pattern.compile("(?is)^\\s*(USE|SET)\\b.*");

  private ManifestPlugin() {}

  /** {@code delegate}, or with plugin mode on, {@code delegate} registering the manifest in
   *  {@code session} at its first call. */
  public static ParserInterface parser(SparkSession session, ParserInterface delegate) {
    String manifest = session.sparkContext().getConf().get(MANIFEST_CONF, "").strip();
    if (manifest.isEmpty()) {
      return delegate;
    }
    if (!UNIMPLEMENTED.isEmpty()) {
      if (!toldIncompatible) {
        toldIncompatible = true;
        LOG.error("sql_dl's plugin mode cannot wrap this Spark's SQL parser, whose interface has "
            + "methods it does not implement ({}; it was checked on Spark 4.3.0): sessions get "
            + "no manifest; sql-dl serve and sql_dl.session still work. Received: Spark {}",
            String.join(", ", UNIMPLEMENTED), session.version());
      }
      return delegate;
    }
    return new ManifestParser(delegate, new SessionRegistration(session, manifest));
  }

  /** The abstract methods of this Spark's ParserInterface that ManifestParser lacks (none on
   *  Spark 4.3.0; a later Spark may add some). */
  private static final List<String> UNIMPLEMENTED = unimplemented();
  private static volatile boolean toldIncompatible;

  private static List<String> unimplemented() {
    List<String> missing = new ArrayList<>();
    for (Method method : ParserInterface.class.getMethods()) {
      if (Modifier.isStatic(method.getModifiers())) {
        continue;  // Scala's trait helpers ($init$, parsePlanWithParameters$)
      }
      try {
        Method implemented = ManifestParser.class.getMethod(method.getName(),
                                                            method.getParameterTypes());
        if (Modifier.isAbstract(implemented.getModifiers())) {
          missing.add(method.getName());
        }
      } catch (NoSuchMethodException e) {
        missing.add(method.getName());
      }
    }
    return missing;
  }
}
