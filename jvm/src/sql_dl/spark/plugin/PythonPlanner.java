package sql_dl.spark.plugin;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.SparkConf;
import org.apache.spark.sql.SparkSession;

/**
 * The short Python call that plans a manifest on the driver: {@code python -m
 * sql_dl.driver.plugin} (see that module for what it does and its JSON lines), run with the
 * Python of {@code spark.sql_dl.python} (else {@code spark.pyspark.driver.python},
 * {@code spark.pyspark.python}, {@code PYSPARK_DRIVER_PYTHON}, {@code PYSPARK_PYTHON},
 * {@code python3}), which must have sql_dl of this jar's version. Remote files it needs (the
 * manifest, models on HDFS or S3) are copied here, through Hadoop's file systems.
 */
final class PythonPlanner {

  private static final ObjectMapper JSON = new ObjectMapper();
  private static final int STDERR_LINES = 20;
  private static File staging;

  private PythonPlanner() {}

  static Registration plan(SparkSession session, String manifest) {
    SparkConf conf = session.sparkContext().getConf();
    String python = python(conf);
    File dir = staging();
    List<String> command = List.of(python, "-m", "sql_dl.driver.plugin", "--manifest", manifest,
        "--staging", dir.getPath(), "--hive-conf", hiveConf(session));
    ProcessBuilder builder = new ProcessBuilder(command);
    builder.environment().putIfAbsent("TF_CPP_MIN_LOG_LEVEL", "2");
    long started = System.nanoTime();
    Process process;
    try {
      process = builder.start();
    } catch (IOException e) {
      throw new PluginError("sql_dl cannot run Python to plan the manifest " + manifest + ": "
          + e.getMessage() + "; set " + ManifestPlugin.PYTHON_CONF + " to a Python that has "
          + "sql_dl (sql-dl spark-conf prints it). Received: " + ManifestPlugin.PYTHON_CONF
          + "=" + python);
    }
    Deque<String> stderr = new ArrayDeque<>();
    Thread reader = new Thread(() -> keepLastLines(process.getErrorStream(), stderr),
        "sql_dl-plugin-stderr");
    reader.setDaemon(true);
    reader.start();
    JsonNode result = null;
    try (BufferedReader out = new BufferedReader(new InputStreamReader(
             process.getInputStream(), StandardCharsets.UTF_8));
         Writer in = new OutputStreamWriter(process.getOutputStream(), StandardCharsets.UTF_8)) {
      for (String line = out.readLine(); line != null; line = out.readLine()) {
        JsonNode message = JSON.readTree(line);
        if (message.has("fetch")) {
          in.write(JSON.writeValueAsString(fetch(session, message.get("fetch").asText(), dir))
              + "\n");
          in.flush();
        } else {
          result = message;
        }
      }
      process.waitFor();
      reader.join(2000);
    } catch (IOException e) {
      throw new PluginError("sql_dl cannot read the answer of " + python + " -m "
          + "sql_dl.driver.plugin: " + e.getMessage() + lastLines(stderr));
    } catch (InterruptedException e) {
      process.destroyForcibly();
      Thread.currentThread().interrupt();
      throw new PluginError("sql_dl's planning of the manifest " + manifest + " was interrupted");
    }
    if (result == null) {
      throw new PluginError("sql_dl cannot plan the manifest " + manifest + ": " + python
          + " -m sql_dl.driver.plugin exited with status " + process.exitValue()
          + lastLines(stderr) + "; set " + ManifestPlugin.PYTHON_CONF + " to a Python that has "
          + "sql_dl " + version() + ". Received: " + ManifestPlugin.PYTHON_CONF + "=" + python);
    }
    if (result.has("problems")) {
      List<String> problems = new ArrayList<>();
      result.get("problems").forEach(p -> problems.add(p.asText()));
      throw new PluginError("sql_dl cannot register the manifest " + manifest + " ("
          + ManifestPlugin.MANIFEST_CONF + "):\n" + String.join("\n", problems));
    }
    JsonNode registration = result.get("registration");
    String pythonVersion = registration.get("version").asText();
    if (!pythonVersion.equals(version())) {
      throw new PluginError("sql_dl's jar is version " + version() + ", but the sql_dl of "
          + python + " is version " + pythonVersion + ": use the jar of that install "
          + "(sql-dl spark-conf prints its path), or install sql_dl " + version() + " there. "
          + "Received: " + ManifestPlugin.PYTHON_CONF + "=" + python);
    }
    ManifestPlugin.LOG.info("sql_dl: planned the manifest {} with {} in {} ms", manifest, python,
        (System.nanoTime() - started) / 1_000_000);
    return new Registration(registration, workerPython(conf, python));
  }

  /** The Python that plans the manifest. */
  static String python(SparkConf conf) {
    for (String key : new String[] {ManifestPlugin.PYTHON_CONF, "spark.pyspark.driver.python",
                                     "spark.pyspark.python"}) {
      if (conf.contains(key)) {
        return conf.get(key);
      }
    }
    for (String variable : new String[] {"PYSPARK_DRIVER_PYTHON", "PYSPARK_PYTHON"}) {
      String value = System.getenv(variable);
      if (value != null && !value.isEmpty()) {
        return value;
      }
    }
    return "python3";
  }

  /** The Python the executors' workers run: {@code spark.pyspark.python}, else
   *  {@code PYSPARK_PYTHON}, else the planner's. */
  private static String workerPython(SparkConf conf, String planner) {
    if (conf.contains("spark.pyspark.python")) {
      return conf.get("spark.pyspark.python");
    }
    String value = System.getenv("PYSPARK_PYTHON");
    return value != null && !value.isEmpty() ? value : planner;
  }

  /** This jar's sql_dl version (written into the jar at build time). */
  static String version() {
    Properties properties = new Properties();
    try (InputStream in = PythonPlanner.class.getResourceAsStream("/sql_dl/version.properties")) {
      if (in != null) {
        properties.load(in);
      }
    } catch (IOException e) {
      return "unknown";
    }
    return properties.getProperty("version", "unknown");
  }

  /** The authentication settings of HiveServer2 (LDAP's, for {@code group:} grants): from
   *  {@code spark.hadoop.*}, or the system properties the Thrift Server's {@code --hiveconf}
   *  options become. */
  private static String hiveConf(SparkSession session) {
    Map<String, String> settings = new HashMap<>();
    Configuration hadoop = session.sparkContext().hadoopConfiguration();
    hadoop.forEach(entry -> {
      if (entry.getKey().startsWith("hive.server2.authentication")) {
        settings.put(entry.getKey(), entry.getValue());
      }
    });
    System.getProperties().forEach((key, value) -> {
      if (String.valueOf(key).startsWith("hive.server2.authentication")) {
        settings.put(String.valueOf(key), String.valueOf(value));
      }
    });
    try {
      return JSON.writeValueAsString(settings);
    } catch (IOException e) {
      return "{}";
    }
  }

  /** Copies a remote file into the staging folder; the answer to a {@code fetch} line. */
  private static Map<String, String> fetch(SparkSession session, String uri, File dir) {
    try {
      Path source = new Path(uri);
      FileSystem fs = source.getFileSystem(session.sparkContext().hadoopConfiguration());
      File target = new File(dir, "fetched-" + Integer.toHexString(uri.hashCode()) + "-"
          + source.getName());
      fs.copyToLocalFile(false, source, new Path(target.toURI()), true);
      return Map.of("path", target.getPath());
    } catch (IOException | RuntimeException e) {
      return Map.of("error", "cannot copy " + uri + ": " + e.getMessage());
    }
  }

  /** The folder models are staged in for the executors, removed when the JVM ends. */
  private static synchronized File staging() {
    if (staging == null) {
      try {
        staging = Files.createTempDirectory("sql_dl-plugin-").toFile();
      } catch (IOException e) {
        throw new PluginError("sql_dl cannot create a staging folder in "
            + System.getProperty("java.io.tmpdir") + ": " + e.getMessage());
      }
      File dir = staging;
      Runtime.getRuntime().addShutdownHook(new Thread(() -> delete(dir)));
    }
    return staging;
  }

  private static void delete(File file) {
    File[] children = file.listFiles();
    if (children != null) {
      for (File child : children) {
        delete(child);
      }
    }
    file.delete();
  }

  private static void keepLastLines(InputStream stream, Deque<String> lines) {
    try (BufferedReader reader = new BufferedReader(
             new InputStreamReader(stream, StandardCharsets.UTF_8))) {
      for (String line = reader.readLine(); line != null; line = reader.readLine()) {
        ManifestPlugin.LOG.debug("sql_dl.driver.plugin: {}", line);
        synchronized (lines) {
          lines.addLast(line);
          if (lines.size() > STDERR_LINES) {
            lines.removeFirst();
          }
        }
      }
    } catch (IOException e) {
      // the process ended
    }
  }

  private static String lastLines(Deque<String> lines) {
    synchronized (lines) {
      return lines.isEmpty() ? "" : " (its last output: " + lines.peekLast().strip() + ")";
    }
  }
}
