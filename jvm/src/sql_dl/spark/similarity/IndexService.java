package sql_dl.spark.similarity;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Python process on the driver that holds the embedding indexes: {@code python -m
 * sql_dl.driver.index_service} (see that module for its JSON lines), one per Python, started
 * at its first request and again if it ends. Its requests are answered one at a time.
 */
final class IndexService {

  private static final Logger LOG = LoggerFactory.getLogger(IndexService.class);
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final int STDERR_LINES = 20;
  private static final Map<String, IndexService> SERVICES = new ConcurrentHashMap<>();

  private final String python;
  private final Deque<String> stderr = new ArrayDeque<>();
  private Process process;
  private BufferedReader out;
  private Writer in;

  private IndexService(String python) {
    this.python = python;
  }

  static IndexService of(String python) {
    return SERVICES.computeIfAbsent(python, IndexService::new);
  }

  /** The answer to {@code request}; a failed request throws with the service's message. */
  synchronized JsonNode call(Map<String, Object> request) {
    String line;
    try {
      start();
      in.write(JSON.writeValueAsString(request) + "\n");
      in.flush();
      line = out.readLine();
    } catch (IOException e) {
      line = null;
    }
    if (line == null) {
      stop();
      throw new IllegalStateException("sql_dl's index service (" + python + " -m "
          + "sql_dl.driver.index_service) ended" + lastLines() + "; the next query starts it "
          + "again");
    }
    JsonNode answer;
    try {
      answer = JSON.readTree(line);
    } catch (IOException e) {
      throw new IllegalStateException("sql_dl's index service answered " + line, e);
    }
    if (answer.has("error")) {
      throw new IndexRequestError(answer.get("error").asText());
    }
    return answer;
  }

  private void start() throws IOException {
    if (process != null && process.isAlive()) {
      return;
    }
    ProcessBuilder builder = new ProcessBuilder(python, "-m", "sql_dl.driver.index_service");
    try {
      process = builder.start();
    } catch (IOException e) {
      throw new IllegalStateException("sql_dl cannot start its index service with " + python
          + ": " + e.getMessage());
    }
    Process started = process;
    Thread reader = new Thread(() -> keepLastLines(started.getErrorStream()),
        "sql_dl-index-service-stderr");
    reader.setDaemon(true);
    reader.start();
    out = new BufferedReader(new InputStreamReader(process.getInputStream(),
        StandardCharsets.UTF_8));
    in = new OutputStreamWriter(process.getOutputStream(), StandardCharsets.UTF_8);
    Runtime.getRuntime().addShutdownHook(new Thread(started::destroy));
    LOG.info("sql_dl: started the index service with {}", python);
  }

  private void stop() {
    if (process != null) {
      process.destroyForcibly();
      process = null;
    }
  }

  private void keepLastLines(InputStream stream) {
    try (BufferedReader reader = new BufferedReader(
             new InputStreamReader(stream, StandardCharsets.UTF_8))) {
      for (String line = reader.readLine(); line != null; line = reader.readLine()) {
        LOG.debug("sql_dl.driver.index_service: {}", line);
        synchronized (stderr) {
          stderr.addLast(line);
          if (stderr.size() > STDERR_LINES) {
            stderr.removeFirst();
          }
        }
      }
    } catch (IOException e) {
      // the process ended
    }
  }

  private String lastLines() {
    synchronized (stderr) {
      return stderr.isEmpty() ? "" : " (its last output: " + stderr.peekLast().strip() + ")";
    }
  }

  /** A request the service refused, with its one-line reason. */
  static final class IndexRequestError extends RuntimeException {
    private static final long serialVersionUID = 1L;

    IndexRequestError(String message) {
      super(message);
    }
  }
}
