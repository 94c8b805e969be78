package sql_dl.spark.catalog;

import java.io.Serializable;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.GlobFilter;
import org.apache.hadoop.fs.GlobPattern;
import org.apache.hadoop.fs.Path;

/**
 * What an image view lists: its folder ({@code path}, a directory, a file or a glob), whether
 * below it ({@code recursive}), which file names ({@code glob}), how old a listing may be
 * ({@code max_staleness}), and where its catalog is kept. Read from the options of
 * {@link CatalogSource}, which sql_dl's Python side names the same.
 */
public record FolderSpec(String path, boolean recursive, String nameGlob, long stalenessMs,
                         String catalogDir, String listing) implements Serializable {

  public static final String PATH = "path";
  public static final String RECURSIVE = "recursivefilelookup";
  public static final String NAME_GLOB = "pathglobfilter";
  public static final String STALENESS = "sql_dl.max_staleness_ms";
  public static final String CATALOG_DIR = "sql_dl.catalog_dir";
  /** {@code auto} (directory modification times where the file system keeps them) or
   *  {@code full} (list everything at each refresh, as for object stores). */
  public static final String LISTING = "sql_dl.listing";
  /** The Spark setting of the folder under which catalogs are kept, when a view has none. */
  public static final String CATALOG_DIR_CONF = "spark.sql_dl.catalogDir";

  /** File systems without directory modification times: each refresh lists everything. */
  private static final Set<String> OBJECT_STORES = Set.of("s3", "s3a", "s3n", "gs", "abfs",
      "abfss", "wasb", "wasbs", "oss", "cos", "cosn", "obs", "r2", "adl");
  private static final String GLOB_CHARS = "*?[{";

  static FolderSpec fromOptions(Map<String, String> options, String defaultCatalogDir) {
    String path = get(options, PATH);
    if (path == null || path.isEmpty()) {
      throw new IllegalArgumentException("sql_dl image catalog: the option path is required");
    }
    String staleness = get(options, STALENESS);
    String catalogDir = get(options, CATALOG_DIR);
    String listing = get(options, LISTING);
    return new FolderSpec(path, !"false".equalsIgnoreCase(get(options, RECURSIVE)),
        get(options, NAME_GLOB), staleness == null ? 0 : Long.parseLong(staleness),
        catalogDir == null || catalogDir.isEmpty() ? defaultCatalogDir : catalogDir,
        listing == null ? "auto" : listing.toLowerCase(Locale.ROOT));
  }

  private static String get(Map<String, String> options, String key) {
    for (Map.Entry<String, String> e : options.entrySet()) {
      if (e.getKey().toLowerCase(Locale.ROOT).equals(key)) {
        return e.getValue();
      }
    }
    return null;
  }

  /** The catalog's folder name: a hash of what decides which files are listed, and of the
   *  catalog format's version, so views of the same folder share a catalog. */
  String key() {
    try {
      MessageDigest digest = MessageDigest.getInstance("SHA-256");
      String text = ImageCatalog.VERSION + "\n" + path + "\n" + recursive + "\n" + nameGlob
          + ("full".equals(listing) ? "\nfull" : "");
      return HexFormat.of().formatHex(digest.digest(text.getBytes(StandardCharsets.UTF_8)))
          .substring(0, 20);
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  /** Where listing starts: the path up to its first glob character's folder. */
  String root() {
    int cut = path.length();
    for (char c : GLOB_CHARS.toCharArray()) {
      int at = path.indexOf(c);
      if (at >= 0) {
        cut = Math.min(cut, at);
      }
    }
    if (cut == path.length()) {
      return path;
    }
    int slash = path.lastIndexOf('/', cut);
    return slash <= 0 ? "/" : path.substring(0, slash);
  }

  boolean hasGlob() {
    return !root().equals(path);
  }

  boolean objectStore(String scheme) {
    return "full".equals(listing) || OBJECT_STORES.contains(scheme.toLowerCase(Locale.ROOT));
  }

  /** Decides which of the listed files belong to the view. */
  Filter filter(Path qualifiedRoot) {
    return new Filter(this, qualifiedRoot);
  }

  /** The files and folders of a listing that the view keeps (as Spark's file index does,
   *  hidden names, those starting with _ or ., are left out). Serializable for executors. */
  static final class Filter implements Serializable {
    private static final long serialVersionUID = 1L;
    private final boolean recursive;
    private final String nameGlob;
    private final String pathGlob;  // qualified, or null
    private final String root;
    private transient GlobFilter names;
    private transient GlobPattern paths;

    Filter(FolderSpec spec, Path qualifiedRoot) {
      recursive = spec.recursive();
      nameGlob = spec.nameGlob();
      root = qualifiedRoot.toString();
      if (spec.hasGlob()) {
        String rest = spec.path().substring(spec.root().length());
        pathGlob = root.replaceAll("/$", "") + (rest.startsWith("/") ? rest : "/" + rest);
      } else {
        pathGlob = null;
      }
    }

    static boolean hidden(String name) {
      return (name.startsWith("_") && !name.contains("=")) || name.startsWith(".")
          || name.endsWith("._COPYING_");
    }

    /** Whether to look into a sub-folder of a listed folder at all. */
    boolean descend(FileStatus dir) {
      return !hidden(dir.getPath().getName()) && (recursive || pathGlob != null);
    }

    /** Whether a listed file is one of the view's images. */
    boolean keep(FileStatus file) {
      Path path = file.getPath();
      if (hidden(path.getName()) || file.getLen() == 0) {  // Spark's file scans skip empty files
        return false;
      }
      try {
        if (nameGlob != null && !nameGlob.isEmpty()) {
          if (names == null) {
            names = new GlobFilter(nameGlob);
          }
          if (!names.accept(path)) {
            return false;
          }
        }
      } catch (java.io.IOException e) {
        throw new IllegalArgumentException("glob: " + e.getMessage(), e);
      }
      if (pathGlob == null) {
        return recursive || path.getParent().toString().equals(root);
      }
      if (paths == null) {
        paths = new GlobPattern(pathGlob);
      }
      // the glob names the file, or a folder above it (whose files, or whole tree, it means)
      for (Path p = path; p != null && p.toString().length() >= root.length(); p = p.getParent()) {
        if (paths.matches(p.toString())) {
          return p == path || recursive || p.equals(path.getParent());
        }
      }
      return false;
    }
  }
}
