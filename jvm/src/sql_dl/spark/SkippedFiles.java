package sql_dl.spark;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.spark.SparkContext;
import org.apache.spark.TaskContext;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerEvent;
import org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd;
import org.apache.spark.util.AccumulatorV2;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Image files that were listed for a query but deleted before its tasks read them: an
 * accumulator of their paths by SQL execution (one per SparkContext), added to by
 * {@link sql_dl.spark.catalog.ImageBytes} on the executors.
 *
 * <p>When an execution ends, the driver logs its skipped paths once ({@code WARN}) and folds
 * them into the running {@link #total}, which sql_dl's shell and server read before and after
 * each statement.
 */
public final class SkippedFiles extends AccumulatorV2<String, Map<String, Set<String>>> {

  static final int KEPT = 64;  // executions kept by id; older ones are folded into the total
  static final int LOGGED = 10;  // paths named in one log line
  private static final Logger LOG = LoggerFactory.getLogger(SkippedFiles.class);
  private static SkippedFiles registered;
  private static SparkContext owner;

  private final Map<String, Set<String>> byExecution = new LinkedHashMap<>();
  private long folded;

  /** The accumulator of {@code context}, registered (with its logging listener) on first use. */
  public static synchronized SkippedFiles forContext(SparkContext context) {
    if (registered == null || owner != context) {
      registered = new SkippedFiles();
      context.register(registered);
      context.addSparkListener(new EndOfExecution(registered));
      owner = context;
    }
    return registered;
  }

  /** How many listed files the queries of this driver skipped because they were deleted. */
  public static synchronized long total() {
    return registered == null ? 0 : registered.count();
  }

  @Override
  public synchronized boolean isZero() {
    return byExecution.isEmpty() && folded == 0;
  }

  @Override
  public synchronized SkippedFiles copy() {
    SkippedFiles copy = new SkippedFiles();
    copy.folded = folded;
    byExecution.forEach((id, paths) -> copy.byExecution.put(id, new LinkedHashSet<>(paths)));
    return copy;
  }

  @Override
  public synchronized void reset() {
    byExecution.clear();
    folded = 0;
  }

  /** On an executor: {@code path} was deleted before the running task could read it. */
  @Override
  public synchronized void add(String path) {
    TaskContext task = TaskContext.get();
    String execution = task == null ? null : task.getLocalProperty("spark.sql.execution.id");
    byExecution.computeIfAbsent(String.valueOf(execution), id -> new LinkedHashSet<>()).add(path);
  }

  @Override
  public synchronized void merge(AccumulatorV2<String, Map<String, Set<String>>> other) {
    for (Map.Entry<String, Set<String>> e : other.value().entrySet()) {
      byExecution.computeIfAbsent(e.getKey(), id -> new LinkedHashSet<>()).addAll(e.getValue());
    }
    folded += ((SkippedFiles) other).folded;
    List<String> ids = new ArrayList<>(byExecution.keySet());
    for (String id : ids.subList(0, Math.max(0, ids.size() - KEPT))) {
      folded += byExecution.remove(id).size();
    }
  }

  @Override
  public synchronized Map<String, Set<String>> value() {
    Map<String, Set<String>> copy = new LinkedHashMap<>();
    byExecution.forEach((id, paths) -> copy.put(id, new LinkedHashSet<>(paths)));
    return copy;
  }

  synchronized long count() {
    long count = folded;
    for (Set<String> paths : byExecution.values()) {
      count += paths.size();
    }
    return count;
  }

  /** Removes an ended execution's paths, counting them in the total. */
  synchronized Set<String> drain(String execution) {
    Set<String> paths = byExecution.remove(execution);
    if (paths == null) {
      return Set.of();
    }
    folded += paths.size();
    return paths;
  }

  /** Logs the files each SQL execution skipped, once, when it ends. */
  static final class EndOfExecution extends SparkListener {
    private final SkippedFiles skipped;

    EndOfExecution(SkippedFiles skipped) {
      this.skipped = skipped;
    }

    @Override
    public void onOtherEvent(SparkListenerEvent event) {
      if (!(event instanceof SparkListenerSQLExecutionEnd)) {
        return;
      }
      long execution = ((SparkListenerSQLExecutionEnd) event).executionId();
      Set<String> paths = skipped.drain(String.valueOf(execution));
      if (!paths.isEmpty()) {
        List<String> named = new ArrayList<>(paths).subList(0, Math.min(LOGGED, paths.size()));
        String more = paths.size() > LOGGED ? " and " + (paths.size() - LOGGED) + " more" : "";
        LOG.warn("Query execution {}: NULL images of {} image file(s) deleted after the folder "
            + "was listed: {}{}", execution, paths.size(), String.join(", ", named), more);
      }
    }
  }
}
