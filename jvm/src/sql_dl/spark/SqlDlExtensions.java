package sql_dl.spark;

import java.io.File;
import java.util.Enumeration;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;

import org.apache.spark.sql.SparkSessionExtensions;
import sql_dl.spark.access.AnalystRule;
import sql_dl.spark.catalog.LateImages;
import sql_dl.spark.plugin.ManifestPlugin;
import scala.Function1;
import scala.runtime.BoxedUnit;

/**
 * sql_dl's Spark session extensions, for {@code spark.sql.extensions=sql_dl.spark.SqlDlExtensions}
 * (which {@code sql_dl.session}, {@code sql-dl sql} and {@code sql-dl serve} set): every
 * session, Thrift Server sessions included, gets {@link LateImages} (image views over their
 * catalogs), {@link TopNBeforePython} and {@link ReleasePythonWorkers}, and
 * {@link AnalystRule}, which
 * does nothing unless {@code sql-dl serve} (or plugin mode) installed an access policy; with
 * {@code spark.sql_dl.manifest} set, {@link ManifestPlugin} registers that manifest in every
 * session (plugin mode: stock {@code spark-sql}, Thrift Server, Spark Connect, Kyuubi).
 */
public final class SqlDlExtensions implements Function1<SparkSessionExtensions, BoxedUnit> {

  static {
    loadEveryClass();
  }

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    // in this order: fresh catalogs and late image reads, then top-N moves the reads and the
    // models above the limit, then the reads that remain get their tasks
    extensions.injectPreCBORule(LateImages.Fresh::new);
    extensions.injectPreCBORule(session -> new TopNBeforePython());
    extensions.injectPreCBORule(LateImages.Tasks::new);
    extensions.injectColumnar(session -> new ReleasePythonWorkers());
    extensions.injectPostHocResolutionRule(AnalystRule::new);
    extensions.injectParser(ManifestPlugin::parser);  // plugin mode: spark.sql_dl.manifest
    return BoxedUnit.UNIT;
  }

  /**
   * Loads every class of this jar now. When a Thrift Server session ends, Hive closes the
   * class loaders of that session, which can include the one that holds this jar (the
   * driver's, for {@code spark.jars}); a class first needed after that, such as the
   * iterator of {@link ReleasePythonWorkerExec}, would then fail with NoClassDefFoundError.
   */
  private static void loadEveryClass() {
    ClassLoader loader = SqlDlExtensions.class.getClassLoader();
    try (JarFile jar = new JarFile(new File(SqlDlExtensions.class.getProtectionDomain()
        .getCodeSource().getLocation().toURI()))) {
      for (Enumeration<JarEntry> entries = jar.entries(); entries.hasMoreElements(); ) {
        String name = entries.nextElement().getName();
        if (name.endsWith(".class")) {
          Class.forName(name.substring(0, name.length() - 6).replace('/', '.'), false, loader);
        }
      }
    } catch (Exception | LinkageError e) {  // the extension still works until a session ends
      System.err.println("sql_dl: cannot load the classes of its jar in advance: " + e);
    }
  }
}
