package sql_dl.spark.plugin;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.SparkSession;

/**
 * The manifest's {@link Registration}, kept for every session of this JVM: planned again (a
 * {@link PythonPlanner} call) only when the manifest, or a file it names that the planner read,
 * changed size or modification time since, or when the last attempt failed and one of them
 * changed since (a failure is kept too, so that each session's first statement does not run
 * Python again for the same broken manifest).
 */
final class Registrations {

  private record Planned(String manifest, List<String> inputs, List<String> fingerprint,
                         Registration registration, RuntimeException failure) {}

  private static Planned last;

  private Registrations() {}

  /** The registration of {@code manifest} now, planning it when needed. */
  static synchronized Registration current(SparkSession session, String manifest) {
    Configuration hadoop = session.sparkContext().hadoopConfiguration();
    Planned planned = last;
    if (planned == null || !planned.manifest.equals(manifest)
        || !fingerprint(planned.inputs, hadoop).equals(planned.fingerprint)) {
      List<String> inputs = List.of(manifest);
      List<String> before = fingerprint(inputs, hadoop);
      try {
        Registration registration = PythonPlanner.plan(session, manifest);
        inputs = registration.inputs(manifest);
        planned = new Planned(manifest, inputs, fingerprint(inputs, hadoop), registration, null);
      } catch (RuntimeException e) {
        planned = new Planned(manifest, inputs, before, null, e);
      }
      last = planned;
    }
    if (planned.failure != null) {
      throw planned.failure;
    }
    return planned.registration;
  }

  /** Size and modification time of each input ("missing" when it does not exist). */
  private static List<String> fingerprint(List<String> inputs, Configuration hadoop) {
    List<String> fingerprint = new ArrayList<>();
    for (String input : inputs) {
      try {
        Path path = new Path(input);
        FileSystem fs = path.getFileSystem(hadoop);
        FileStatus status = fs.getFileStatus(path);
        fingerprint.add(status.getLen() + "@" + status.getModificationTime());
      } catch (FileNotFoundException e) {
        fingerprint.add("missing");
      } catch (IOException | IllegalArgumentException e) {
        fingerprint.add("unreadable: " + e);
      }
    }
    return fingerprint;
  }

  /**
   * Whether the manifest has an {@code access} section, read with SnakeYAML (Spark's), not
   * validated: what a session must know when the manifest cannot be registered, so that its
   * analysts are refused rather than unrestricted. False when it cannot be read or parsed.
   */
  static boolean declaresAccess(SparkSession session, String manifest) {
    try {
      Path path = new Path(manifest);
      FileSystem fs = path.getFileSystem(session.sparkContext().hadoopConfiguration());
      String text;
      try (java.io.InputStream in = fs.open(path)) {
        text = new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
      }
      Object loaded = new org.yaml.snakeyaml.Yaml(new org.yaml.snakeyaml.constructor
          .SafeConstructor(new org.yaml.snakeyaml.LoaderOptions())).load(text);
      return loaded instanceof java.util.Map<?, ?> map && map.containsKey("access");
    } catch (IOException | RuntimeException e) {
      return false;
    }
  }

  /** The one message a session's first statement fails with. */
  static String describe(String manifest, RuntimeException e) {
    if (e instanceof PluginError) {
      return e.getMessage();
    }
    return "sql_dl cannot register the manifest " + manifest + " (" + ManifestPlugin.MANIFEST_CONF
        + "): " + e;
  }
}
