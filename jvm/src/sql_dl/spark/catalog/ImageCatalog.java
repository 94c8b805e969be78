package sql_dl.spark.catalog;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.Serializable;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicLong;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.SparkContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.util.SerializableConfiguration;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * An image folder's catalog: its listing kept as data, so that a query neither lists the
 * folder again nor holds a file status per image in the driver.
 *
 * <p>The rows ({@code path, length, modification_time}) are Parquet {@link Segments} in the
 * catalog's folder, which Spark reads as the view's relation; the driver keeps one small
 * record per <em>folder</em> (its modification time, sub-folders and segment), and the list
 * of segments, also saved as {@code state.json} so that a restart starts from it.
 *
 * <p>Freshness: {@link #snapshot} gives every query the folder as it was when the query
 * started, or within the view's {@code max_staleness}. On file systems that keep directory
 * modification times (local, NFS, HDFS) a refresh reads the status of each known folder and
 * lists again only those that changed (a file added, deleted or renamed in it changes it),
 * rewriting only the segments that held their rows. A folder modified less than
 * {@link #RACY_MS} before it was listed is listed again at the next refresh (a change in the
 * same clock tick would not change its time). A file rewritten in place (same name) keeps
 * its row's length and time until its folder changes; its bytes are read when a query needs
 * them, so answers are of the new bytes. On object stores, which have no folder times, a
 * refresh lists everything, in the background as {@code max_staleness} allows.
 *
 * <p>A first listing of more than {@link #PARALLEL_FOLDERS} folders is spread over the
 * executors, as Spark's own file index does. Segments a refresh replaced are deleted
 * {@link #GRACE_MS} later (queries still reading them are given that long). A
 * {@code state.json} that cannot be read, is of another version or names a segment that is
 * missing or truncated is not trusted: the catalog is built again.
 */
public final class ImageCatalog {

  static final int VERSION = 1;
  static final long RACY_MS = 2000;
  static final long GRACE_MS = 3_600_000;
  static final int PARALLEL_FOLDERS = 32;
  static final int SMALL_SEGMENTS = 8;  // more segments under ROWS/4 rows are merged
  private static final String STATE = "state.json";
  private static final Logger LOG = LoggerFactory.getLogger(ImageCatalog.class);
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final ConcurrentHashMap<String, ImageCatalog> CATALOGS = new ConcurrentHashMap<>();
  private static final ExecutorService BUILDERS = Executors.newCachedThreadPool(r -> {
    Thread t = new Thread(r, "sql_dl-image-catalog");
    t.setDaemon(true);
    return t;
  });

  /** What queries read: the segments of one refresh. */
  public record Snapshot(List<Segments.Written> segments, long files, long refreshStarted,
                         long refreshed) {}

  /** What the driver keeps per folder. */
  record Folder(long modified, long listed, List<String> subfolders, String segment, int files)
      implements Serializable {}

  private final SparkContext context;
  private final FolderSpec spec;
  private final Configuration conf;
  private final Path root;
  private final FileSystem fs;
  private final Path home;
  private final boolean fullListing;
  private final FolderSpec.Filter filter;
  private final Map<String, Folder> folders = new HashMap<>();
  private final Map<String, Segments.Written> segments = new LinkedHashMap<>();
  private final Map<String, Long> superseded = new HashMap<>();
  private volatile Snapshot current;
  private volatile String state = "new";
  private volatile String problem;
  private volatile long lastRefreshMillis;
  private volatile Future<?> preparing;
  private Future<?> background;
  private final Object backgroundLock = new Object();
  private boolean loaded;
  private final AtomicLong foldersListed = new AtomicLong();
  private final AtomicLong foldersChecked = new AtomicLong();
  private final AtomicLong rebuilds = new AtomicLong();
  private final AtomicLong inExecutors = new AtomicLong();  // folders listed by executors
  private final AtomicLong listedSoFar = new AtomicLong();

  private ImageCatalog(SparkSession session, FolderSpec spec) throws IOException {
    this.context = session.sparkContext();
    this.spec = spec;
    this.conf = session.sessionState().newHadoopConf();
    Path given = new Path(spec.root());
    this.fs = given.getFileSystem(conf);
    this.root = fs.makeQualified(given);
    Path catalogs = new Path(spec.catalogDir());
    this.home = catalogs.getFileSystem(conf).makeQualified(new Path(catalogs, spec.key()));
    this.fullListing = spec.objectStore(root.toUri().getScheme() == null ? "file"
        : root.toUri().getScheme());
    this.filter = spec.filter(root);
  }

  /** The catalog of a folder, one per driver JVM. */
  public static ImageCatalog of(SparkSession session, FolderSpec spec) {
    String key = spec.catalogDir() + "/" + spec.key();
    // a catalog of a stopped SparkContext (a new session in this JVM) starts again from disk
    CATALOGS.computeIfPresent(key, (k, old) -> old.context.isStopped() ? null : old);
    return CATALOGS.computeIfAbsent(key, k -> {
      try {
        return new ImageCatalog(session, spec);
      } catch (IOException e) {
        throw new IllegalArgumentException("sql_dl image catalog of " + spec.path() + ": "
            + e.getMessage(), e);
      }
    });
  }

  /** Every catalog of this JVM. */
  static List<ImageCatalog> all() {
    return new ArrayList<>(CATALOGS.values());
  }

  /** {@link #describe} of every catalog of this JVM. */
  public static List<Map<String, Object>> describeAll() {
    List<Map<String, Object>> all = new ArrayList<>();
    for (ImageCatalog catalog : all()) {
      all.add(catalog.describe());
    }
    return all;
  }

  Path home() {
    return home;
  }

  /** Throws when the folder (the root of a glob) does not exist or cannot be read. */
  public void checkFolder() {
    try {
      if (status(root) == null) {
        throw new IllegalArgumentException("the image folder " + spec.path()
            + " does not exist (" + root + ")");
      }
    } catch (IOException e) {
      throw new IllegalArgumentException("cannot read the image folder " + spec.path() + ": "
          + e, e);
    }
  }

  /** Starts loading or building the catalog in the background, once. */
  public synchronized void prepare() {
    if (current == null && preparing == null) {
      preparing = BUILDERS.submit(() -> {
        try {
          snapshot(Long.MAX_VALUE);
        } catch (RuntimeException e) {
          LOG.warn("Image folder {}: its catalog could not be built: {}", spec.path(),
              e.getMessage());
        }
      });
    }
  }

  /**
   * The catalog as it is now, or within {@code stalenessMs}: refreshed first when the last
   * refresh started longer ago than that (with 0, after this call). Waits for a refresh or
   * build under way.
   */
  public Snapshot snapshot(long stalenessMs) {
    long asked = System.currentTimeMillis();
    Snapshot now = current;  // no lock: a query the current snapshot serves never waits
    if (now != null && stalenessMs > 0 && asked - now.refreshStarted() <= stalenessMs) {
      if (fullListing && asked - now.refreshStarted() > stalenessMs / 2) {
        refreshInBackground();
      }
      return now;
    }
    return snapshot(stalenessMs, asked);
  }

  /** An object store's catalog past half its staleness is refreshed in the background, so
   *  that queries find it fresh enough without listing everything themselves. */
  private void refreshInBackground() {
    synchronized (backgroundLock) {  // not the catalog's lock, which a refresh holds
      if (background != null && !background.isDone()) {
        return;
      }
      background = BUILDERS.submit(() -> {
        try {
          snapshot(0);
        } catch (RuntimeException e) {
          LOG.warn("Image folder {}: background refresh failed: {}", spec.path(), e.getMessage());
        }
      });
    }
  }

  private synchronized Snapshot snapshot(long stalenessMs, long asked) {
    if (!loaded) {
      loaded = true;
      load();
    }
    Snapshot now = current;
    if (now != null && (stalenessMs > 0 ? asked - now.refreshStarted() <= stalenessMs
        : now.refreshStarted() >= asked)) {
      return now;
    }
    long started = System.currentTimeMillis();
    state = now == null ? "building" : "refreshing";
    try {
      if (now == null || fullListing) {
        build(started);
      } else {
        refresh(started);
      }
      state = "ready";
      problem = null;
    } catch (IOException | RuntimeException e) {
      state = current == null ? "failed" : "stale";  // the next query tries again
      problem = e.toString();
      // what this refresh changed in memory may not match a published snapshot: the next
      // one starts again from state.json, the last one published
      folders.clear();
      segments.clear();
      superseded.clear();
      current = null;
      loaded = false;
      throw new IllegalStateException("sql_dl cannot list the image folder " + spec.path()
          + ": " + e, e);
    } finally {
      lastRefreshMillis = System.currentTimeMillis() - started;
    }
    return current;
  }

  // ---------------------------------------------------------------- building and refreshing

  /** Lists the whole folder into new segments (in executors past PARALLEL_FOLDERS). */
  private void build(long started) throws IOException {
    listedSoFar.set(0);
    FileStatus top = status(root);
    if (top == null) {
      throw new FileNotFoundException("the folder does not exist");
    }
    Map<String, Folder> found = new HashMap<>();
    List<Segments.Written> written = new ArrayList<>();
    try (Segments.Sink sink = new Segments.Sink(home, conf)) {
      Walker walker = new Walker(fs, filter, sink, found, listedSoFar);
      Deque<Path> queue = new ArrayDeque<>();
      queue.add(root);
      while (!queue.isEmpty()) {
        if (queue.size() >= PARALLEL_FOLDERS && distributable()) {
          inExecutors(queue, found, written);
          break;
        }
        Path next = queue.poll();
        queue.addAll(walker.list(next, next == root ? top : null));
      }
      written.addAll(sink.segments());
    }
    foldersListed.addAndGet(found.size());
    Map<String, Segments.Written> old = new LinkedHashMap<>(segments);
    folders.clear();
    folders.putAll(found);
    segments.clear();
    for (Segments.Written w : written) {
      segments.put(w.file(), w);
    }
    for (String file : old.keySet()) {
      superseded.put(file, started);
    }
    publish(started);
    LOG.info("Image folder {}: catalog built with {} files in {} folders ({} segments) in {} ms",
        spec.path(), current.files(), folders.size(), segments.size(),
        System.currentTimeMillis() - started);
  }

  /** Lists again the folders whose modification time changed, and new ones. */
  private void refresh(long started) throws IOException {
    if (status(root) == null) {
      throw new FileNotFoundException("the folder does not exist");
    }
    Map<String, Folder> found = new HashMap<>();
    Set<String> leaving = new HashSet<>();  // folders whose rows leave their segment
    Set<String> gone = new HashSet<>();
    Set<String> rewritten = new HashSet<>();
    List<Segments.Written> written = new ArrayList<>();
    try (Segments.Sink sink = new Segments.Sink(home, conf)) {
      Walker walker = new Walker(fs, filter, sink, found, listedSoFar);
      Deque<Path> stack = new ArrayDeque<>();
      stack.push(root);
      while (!stack.isEmpty()) {
        Path dir = stack.pop();
        String key = dir.toString();
        Folder known = folders.get(key);
        FileStatus now = status(dir);
        foldersChecked.incrementAndGet();
        if (now == null) {
          if (known != null) {
            removeTree(key, leaving, gone);
          }
          continue;
        }
        if (known != null && now.getModificationTime() == known.modified()
            && known.listed() - known.modified() >= RACY_MS) {
          for (String sub : known.subfolders()) {
            stack.push(new Path(sub));
          }
          continue;
        }
        List<Path> subfolders = walker.list(dir, now);
        foldersListed.incrementAndGet();
        if (known != null) {
          leaving.add(key);
          Set<String> still = new HashSet<>();
          subfolders.forEach(p -> still.add(p.toString()));
          for (String sub : known.subfolders()) {
            if (!still.contains(sub)) {
              removeTree(sub, leaving, gone);
            }
          }
        }
        for (Path sub : subfolders) {
          stack.push(sub);
        }
      }
      if (leaving.isEmpty() && found.isEmpty()) {
        publish(started);  // nothing changed: the same segments, a new time
        return;
      }
      // the segments that held rows of folders listed again or gone: their other rows move
      for (String dir : leaving) {
        Folder f = folders.get(dir);
        if (f != null && f.segment() != null) {
          rewritten.add(f.segment());
        }
      }
      for (String dir : gone) {
        folders.remove(dir);
      }
      folders.putAll(found);
      copyRows(rewritten, leaving, sink);
      written.addAll(sink.segments());
    }
    replace(rewritten, written, started);
    compact(started);
    publish(started);
  }

  private void replace(Set<String> old, List<Segments.Written> written, long started) {
    for (String file : old) {
      segments.remove(file);
      superseded.put(file, started);
    }
    for (Segments.Written w : written) {
      segments.put(w.file(), w);
    }
  }

  /** Copies the rows of {@code files} into {@code sink}, leaving out those of the folders
   *  {@code leaveOut}; the folders copied now point at their new segment. */
  private void copyRows(Set<String> files, Set<String> leaveOut, Segments.Sink sink)
      throws IOException {
    Map<String, String> moved = new HashMap<>();
    String[] last = {null};
    for (String file : files) {
      Segments.read(Segments.file(home, file), conf, leaveOut, (path, length, modified) -> {
        int slash = path.lastIndexOf('/');
        String dir = slash < 0 ? "" : path.substring(0, slash);
        if (!dir.equals(last[0])) {
          last[0] = dir;
          moved.put(dir, sink.folder());
        }
        sink.add(path, length, modified);
      });
    }
    moved.forEach((dir, segment) -> {
      Folder f = folders.get(dir);
      if (f != null) {
        folders.put(dir, new Folder(f.modified(), f.listed(), f.subfolders(), segment,
            f.files()));
      }
    });
    // a single file given as the view's path is its own "folder"
    for (Map.Entry<String, Folder> e : folders.entrySet()) {
      Folder f = e.getValue();
      if (f.segment() != null && files.contains(f.segment()) && !moved.containsKey(e.getKey())
          && !leaveOut.contains(e.getKey())) {
        String parent = new Path(e.getKey()).getParent().toString();
        if (moved.containsKey(parent)) {
          e.setValue(new Folder(f.modified(), f.listed(), f.subfolders(), moved.get(parent),
              f.files()));
        }
      }
    }
  }

  /** Merges small segments once there are more than SMALL_SEGMENTS of them. */
  private void compact(long started) throws IOException {
    Set<String> small = new HashSet<>();
    for (Segments.Written w : segments.values()) {
      if (w.rows() < Segments.ROWS / 4) {
        small.add(w.file());
      }
    }
    if (small.size() <= SMALL_SEGMENTS) {
      return;
    }
    List<Segments.Written> written;
    try (Segments.Sink sink = new Segments.Sink(home, conf)) {
      copyRows(small, Set.of(), sink);
      written = sink.segments();
    }
    replace(small, written, started);
  }

  private void removeTree(String dir, Set<String> leaving, Set<String> gone) {
    Deque<String> stack = new ArrayDeque<>();
    stack.push(dir);
    while (!stack.isEmpty()) {
      String next = stack.pop();
      Folder f = folders.get(next);
      if (f == null || !gone.add(next)) {
        continue;
      }
      leaving.add(next);
      f.subfolders().forEach(stack::push);
    }
  }

  private FileStatus status(Path path) throws IOException {
    try {
      return fs.getFileStatus(path);
    } catch (FileNotFoundException e) {
      return null;
    }
  }

  /** Whether executors can write segments the driver reads: a shared file system, or a
   *  local master (local, local-cluster) whose executors share the driver's disk. */
  private boolean distributable() {
    String master = context.master();
    return master.startsWith("local") || !"file".equals(home.toUri().getScheme());
  }

  /** Lists the folders of {@code queue}, with everything below them, in executors. */
  private void inExecutors(Deque<Path> queue, Map<String, Folder> found,
                           List<Segments.Written> written) {
    List<String> paths = new ArrayList<>();
    queue.forEach(p -> paths.add(p.toString()));
    int tasks = Math.min(paths.size(), Math.max(1, context.defaultParallelism() * 4));
    Future<List<Listed>> job = BUILDERS.submit(() -> {
      context.setLocalProperties(new Properties());  // not the query's that asked
      context.setJobGroup("sql_dl-catalog-" + spec.key(),
          "sql_dl: listing the image folder " + spec.path(), true);
      context.setLocalProperty("spark.scheduler.pool", "sql_dl");
      JavaSparkContext jsc = JavaSparkContext.fromSparkContext(context);
      return jsc.parallelize(paths, tasks)
          .mapPartitions(new ListInExecutor(home.toString(), filter,
              new SerializableConfiguration(conf)))
          .collect();
    });
    try {
      for (Listed listed : job.get()) {
        found.putAll(listed.folders());
        inExecutors.addAndGet(listed.folders().size());
        written.addAll(listed.segments());
        listedSoFar.addAndGet(listed.files());
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("interrupted while listing " + spec.path(), e);
    } catch (ExecutionException e) {
      throw new IllegalStateException("listing " + spec.path() + " in executors failed: "
          + e.getCause(), e.getCause());
    }
  }

  /** What one executor task listed. */
  record Listed(Map<String, Folder> folders, List<Segments.Written> segments, long files)
      implements Serializable {}

  /** An executor task: lists its folders and everything below them into new segments. */
  static final class ListInExecutor implements FlatMapFunction<Iterator<String>, Listed> {
    private static final long serialVersionUID = 1L;
    private final String home;
    private final FolderSpec.Filter filter;
    private final SerializableConfiguration conf;

    ListInExecutor(String home, FolderSpec.Filter filter, SerializableConfiguration conf) {
      this.home = home;
      this.filter = filter;
      this.conf = conf;
    }

    @Override
    public Iterator<Listed> call(Iterator<String> paths) throws IOException {
      Configuration hadoop = conf.value();
      Map<String, Folder> found = new HashMap<>();
      AtomicLong files = new AtomicLong();
      List<Segments.Written> written;
      try (Segments.Sink sink = new Segments.Sink(new Path(home), hadoop)) {
        Deque<Path> stack = new ArrayDeque<>();
        while (paths.hasNext()) {
          Path start = new Path(paths.next());
          Walker walker = new Walker(start.getFileSystem(hadoop), filter, sink, found, files);
          stack.push(start);
          while (!stack.isEmpty()) {
            walker.list(stack.pop(), null).forEach(stack::push);
          }
        }
        written = sink.segments();
      }
      return List.of(new Listed(found, written, files.get())).iterator();
    }
  }

  /** Lists one folder: its files into the sink, its record into {@code found}. */
  static final class Walker {
    private final FileSystem fs;
    private final FolderSpec.Filter filter;
    private final Segments.Sink sink;
    private final Map<String, Folder> found;
    private final AtomicLong files;

    Walker(FileSystem fs, FolderSpec.Filter filter, Segments.Sink sink, Map<String, Folder> found,
           AtomicLong files) {
      this.fs = fs;
      this.filter = filter;
      this.sink = sink;
      this.found = found;
      this.files = files;
    }

    /** Lists {@code dir} ({@code status}: its status, read before, or null) and returns its
     *  sub-folders to walk; a folder deleted meanwhile gives nothing. */
    List<Path> list(Path dir, FileStatus status) throws IOException {
      FileStatus[] entries;
      try {
        if (status == null) {
          status = fs.getFileStatus(dir);  // its time before its listing: a later change shows
        }
        entries = status.isDirectory() ? fs.listStatus(dir) : new FileStatus[] {status};
      } catch (FileNotFoundException e) {
        return List.of();
      }
      long listed = System.currentTimeMillis();
      String segment = null;
      int count = 0;
      List<Path> subfolders = new ArrayList<>();
      List<String> names = new ArrayList<>();
      for (FileStatus entry : entries) {
        if (entry.isDirectory()) {
          if (filter.descend(entry)) {
            subfolders.add(entry.getPath());
            names.add(entry.getPath().toString());
          }
        } else if (filter.keep(entry)) {
          if (segment == null) {
            segment = sink.folder();
          }
          sink.add(entry);
          count++;
        }
      }
      files.addAndGet(count);
      found.put(dir.toString(), new Folder(status.getModificationTime(), listed, names, segment,
          count));
      return subfolders;
    }
  }

  // ---------------------------------------------------------------- state on disk

  private void publish(long started) throws IOException {
    long files = 0;
    for (Segments.Written w : segments.values()) {
      files += w.rows();
    }
    current = new Snapshot(List.copyOf(segments.values()), files, started,
        System.currentTimeMillis());
    save();
    collect(started);
  }

  private void save() throws IOException {
    ObjectNode state = JSON.createObjectNode();
    state.put("version", VERSION);
    state.put("path", spec.path());
    state.put("recursive", spec.recursive());
    state.put("glob", spec.nameGlob());
    state.put("refreshed", current.refreshStarted());
    ArrayNode list = state.putArray("segments");
    for (Segments.Written w : segments.values()) {
      list.addObject().put("file", w.file()).put("rows", w.rows()).put("bytes", w.bytes());
    }
    ObjectNode dirs = state.putObject("folders");
    folders.forEach((dir, f) -> {
      ArrayNode record = dirs.putArray(dir);
      record.add(f.modified()).add(f.listed()).add(f.segment()).add(f.files());
      ArrayNode subs = record.addArray();
      f.subfolders().forEach(subs::add);
    });
    ObjectNode old = state.putObject("superseded");
    superseded.forEach(old::put);
    FileSystem catalogFs = home.getFileSystem(conf);
    Path temporary = new Path(home, "." + STATE + "." + System.nanoTime());
    try (OutputStream out = catalogFs.create(temporary, true)) {
      out.write(JSON.writeValueAsBytes(state));
    }
    catalogFs.setPermission(temporary, Segments.PRIVATE_FILE);
    Path target = new Path(home, STATE);
    if (!catalogFs.rename(temporary, target)) {  // local file systems replace the target
      catalogFs.delete(target, false);
      if (!catalogFs.rename(temporary, target)) {
        throw new IOException("cannot write " + target);
      }
    }
  }

  /** Reads state.json, if it is there and can be trusted; otherwise starts afresh. */
  private void load() {
    Path target = new Path(home, STATE);
    String why;
    try {
      FileSystem catalogFs = home.getFileSystem(conf);
      if (!catalogFs.exists(target)) {
        return;
      }
      JsonNode state;
      try (InputStream in = catalogFs.open(target)) {
        state = JSON.readTree(in);
      }
      why = untrusted(state);
      if (why == null) {
        Map<String, Segments.Written> read = new LinkedHashMap<>();
        for (JsonNode s : state.get("segments")) {
          Segments.Written w = new Segments.Written(s.get("file").asText(),
              s.get("rows").asLong(), s.get("bytes").asLong());
          long rows = Segments.footerRows(Segments.file(home, w.file()), conf);
          if (rows != w.rows()) {
            throw new IOException("segment " + w.file() + " has " + rows + " rows, not "
                + w.rows());
          }
          read.put(w.file(), w);
        }
        Map<String, Folder> dirs = new HashMap<>();
        state.get("folders").fields().forEachRemaining(e -> {
          JsonNode r = e.getValue();
          List<String> subs = new ArrayList<>();
          r.get(4).forEach(n -> subs.add(n.asText()));
          dirs.put(e.getKey(), new Folder(r.get(0).asLong(), r.get(1).asLong(),
              subs, r.get(2).isNull() ? null : r.get(2).asText(), r.get(3).asInt()));
        });
        folders.putAll(dirs);
        segments.putAll(read);
        state.path("superseded").fields().forEachRemaining(
            e -> superseded.put(e.getKey(), e.getValue().asLong()));
        long files = 0;
        for (Segments.Written w : read.values()) {
          files += w.rows();
        }
        long refreshed = state.get("refreshed").asLong();
        current = new Snapshot(List.copyOf(read.values()), files, refreshed, refreshed);
        this.state = "ready";
        return;
      }
    } catch (IOException | RuntimeException e) {
      why = e.toString();
    }
    folders.clear();
    segments.clear();
    superseded.clear();
    rebuilds.incrementAndGet();
    LOG.warn("Image folder {}: its catalog {} is not trusted ({}); it is built again",
        spec.path(), home, why);
    try {
      home.getFileSystem(conf).delete(home, true);
    } catch (IOException e) {
      LOG.warn("Image folder {}: cannot delete {}: {}", spec.path(), home, e.toString());
    }
  }

  private String untrusted(JsonNode state) {
    if (state.path("version").asInt(-1) != VERSION) {
      return "written by another version of sql_dl";
    }
    if (!spec.path().equals(state.path("path").asText(null))
        || spec.recursive() != state.path("recursive").asBoolean()
        || !String.valueOf(spec.nameGlob()).equals(
            state.path("glob").isNull() ? "null" : state.path("glob").asText())) {
      return "of another folder";
    }
    for (String key : List.of("segments", "folders", "refreshed")) {
      if (!state.has(key)) {
        return "no " + key;
      }
    }
    return null;
  }

  /** Deletes segments replaced longer than GRACE_MS ago, and stray files of failed
   *  refreshes as old. */
  private void collect(long now) {
    try {
      FileSystem catalogFs = home.getFileSystem(conf);
      Iterator<Map.Entry<String, Long>> it = superseded.entrySet().iterator();
      while (it.hasNext()) {
        Map.Entry<String, Long> e = it.next();
        if (now - e.getValue() > GRACE_MS) {
          catalogFs.delete(Segments.file(home, e.getKey()), false);
          it.remove();
        }
      }
      for (FileStatus f : catalogFs.listStatus(home)) {
        String name = f.getPath().getName();
        if (name.startsWith("segment-") && !segments.containsKey(name)
            && !superseded.containsKey(name) && now - f.getModificationTime() > GRACE_MS) {
          catalogFs.delete(f.getPath(), false);
        }
      }
    } catch (IOException e) {
      LOG.warn("Image folder {}: old catalog segments not deleted: {}", spec.path(),
          e.toString());
    }
  }

  // ---------------------------------------------------------------- what sql_dl_views shows

  /** The catalog's figures, for sql_dl_views and tests. */
  public Map<String, Object> describe() {
    Snapshot now = current;
    Map<String, Object> d = new LinkedHashMap<>();
    d.put("path", spec.path());
    d.put("catalog", home.toString());
    d.put("state", state);
    d.put("files", now == null ? listedSoFar.get() : now.files());
    d.put("folders", (long) folders.size());
    d.put("segments", now == null ? 0L : (long) now.segments().size());
    d.put("refreshed", now == null ? null : now.refreshStarted());
    d.put("refresh_ms", lastRefreshMillis);
    d.put("folders_listed", foldersListed.get());
    d.put("folders_checked", foldersChecked.get());
    d.put("rebuilds", rebuilds.get());
    d.put("folders_listed_in_executors", inExecutors.get());
    d.put("problem", problem);
    d.put("full_listing", fullListing);
    return d;
  }
}
