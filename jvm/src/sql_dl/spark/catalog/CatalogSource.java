package sql_dl.spark.catalog;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.SQLContext;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.execution.datasources.FileStatusCache;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.execution.datasources.InMemoryFileIndex;
import org.apache.spark.sql.execution.datasources.PartitionSpec;
import org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat;
import org.apache.spark.sql.sources.BaseRelation;
import org.apache.spark.sql.sources.DataSourceRegister;
import org.apache.spark.sql.sources.RelationProvider;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import scala.Option;
import scala.jdk.javaapi.CollectionConverters;

/**
 * The relation of an image view: {@code spark.read.format("sql_dl.spark.catalog.CatalogSource")
 * .option("path", folder)...}, or {@code CREATE TABLE t USING sql_dl.spark.catalog.CatalogSource
 * OPTIONS (path ...)}. Its columns are {@code path, image, length, modification_time}: the rows
 * of the folder's {@link ImageCatalog}, read by Spark's Parquet reader. {@code image} is not
 * stored: sql_dl's extension ({@link LateImages}) reads it, by path, for the rows a
 * query returns or scores, and gives each query a fresh snapshot of the catalog.
 *
 * <p>Creating the relation checks that the folder exists and starts the catalog's
 * build or load in the background; it does not wait for it.
 */
public final class CatalogSource implements RelationProvider, DataSourceRegister {

  public static final StructType SCHEMA = new StructType(new StructField[] {
      DataTypes.createStructField("path", DataTypes.StringType, false),
      DataTypes.createStructField("image", DataTypes.BinaryType, true),
      DataTypes.createStructField("length", DataTypes.LongType, false),
      DataTypes.createStructField("modification_time", DataTypes.TimestampType, false)});

  @Override
  public String shortName() {
    return "sql_dl_images";
  }

  @Override
  public BaseRelation createRelation(SQLContext sqlContext,
                                     scala.collection.immutable.Map<String, String> options) {
    SparkSession session = sqlContext.sparkSession();
    FolderSpec spec = spec(session, CollectionConverters.asJava(options));
    ImageCatalog catalog = ImageCatalog.of(session, spec);
    catalog.checkFolder();
    catalog.prepare();
    return relation(session, catalog, spec, options, null);
  }

  /** The folder of {@code options}, its path qualified ({@code /data} is {@code file:/data}
   *  on a local default file system): views of one folder share its catalog. */
  static FolderSpec spec(SparkSession session, Map<String, String> options) {
    String dir = session.conf().get(FolderSpec.CATALOG_DIR_CONF, null);
    if (dir == null) {
      dir = new Path(session.conf().get("spark.sql.warehouse.dir"), "_sql_dl_catalog").toString();
    }
    FolderSpec given = FolderSpec.fromOptions(options, dir);
    try {
      Path path = new Path(given.path());
      String qualified = path.getFileSystem(session.sessionState().newHadoopConf())
          .makeQualified(path).toString();
      return new FolderSpec(qualified, given.recursive(), given.nameGlob(),
          given.stalenessMs(), given.catalogDir(), given.listing());
    } catch (java.io.IOException | IllegalArgumentException e) {
      throw new IllegalArgumentException("sql_dl image view: cannot use the path "
          + given.path() + ": " + e.getMessage(), e);
    }
  }

  /** A relation of the view {@code spec} (its own staleness: views of one folder share the
   *  catalog) over {@code snapshot}'s segments (none when null). */
  public static HadoopFsRelation relation(SparkSession session, ImageCatalog catalog,
                                          FolderSpec spec,
                                          scala.collection.immutable.Map<String, String> options,
                                          ImageCatalog.Snapshot snapshot) {
    List<Path> files = new ArrayList<>();
    Map<Path, FileStatus> statuses = new java.util.HashMap<>();
    long count = 0;
    if (snapshot != null) {
      for (Segments.Written w : snapshot.segments()) {
        Path file = Segments.file(catalog.home(), w.file());
        files.add(file);
        statuses.put(file, new FileStatus(w.bytes(), false, 1, 128L << 20, 0, file));
      }
      count = snapshot.files();
    }
    Map<String, String> lower = new java.util.HashMap<>();
    CollectionConverters.asJava(options).forEach(
        (k, v) -> lower.put(k.toLowerCase(java.util.Locale.ROOT), v));
    scala.collection.immutable.Map<String, String> given = scalaMap(lower);
    // the index lists the segments: the folder's own file filters are not for them
    Map<String, String> forIndex = new java.util.HashMap<>(lower);
    forIndex.keySet().removeAll(java.util.Set.of(FolderSpec.NAME_GLOB, FolderSpec.RECURSIVE));
    CatalogIndex index = new CatalogIndex(session, files, scalaMap(forIndex), new Known(statuses),
        spec, given, count);
    return new HadoopFsRelation(index, new StructType(), SCHEMA, Option.empty(),
        new ParquetFileFormat(), given, session);
  }

  private static scala.collection.immutable.Map<String, String> scalaMap(Map<String, String> m) {
    return scala.collection.immutable.Map$.MODULE$.from(CollectionConverters.asScala(m));
  }

  /**
   * The file index of a catalog relation: the segments of one snapshot, and what the
   * extension needs to find the catalog again (Spark may rebuild the relation around it,
   * without the options it was made with).
   */
  public static final class CatalogIndex extends InMemoryFileIndex {
    private final FolderSpec spec;
    private final scala.collection.immutable.Map<String, String> options;
    private final long files;

    CatalogIndex(SparkSession session, List<Path> segments,
                 scala.collection.immutable.Map<String, String> forIndex, Known statuses,
                 FolderSpec spec, scala.collection.immutable.Map<String, String> options,
                 long files) {
      super(session, CollectionConverters.asScala(segments).toList(), forIndex,
          Option.apply(SCHEMA), statuses, Option.apply(new PartitionSpec(new StructType(),
              scala.collection.immutable.List$.MODULE$.empty())), Option.empty());
      this.spec = spec;
      this.options = options;
      this.files = files;
    }

    public FolderSpec spec() {
      return spec;
    }

    /** The options the relation was made with (lower-case keys). */
    public scala.collection.immutable.Map<String, String> options() {
      return options;
    }

    /** The image files in the snapshot. */
    public long files() {
      return files;
    }

    /** Equal to itself only: {@code InMemoryFileIndex} compares root paths, and two
     *  snapshots of the same segments must still differ for the extension's rules. */
    @Override
    public boolean equals(Object other) {
      return other == this;
    }

    @Override
    public int hashCode() {
      return System.identityHashCode(this);
    }
  }

  /** The statuses of a snapshot's segments, known without asking the file system. */
  static final class Known extends FileStatusCache {
    private final Map<Path, FileStatus> statuses;

    Known(Map<Path, FileStatus> statuses) {
      this.statuses = statuses;
    }

    @Override
    public Option<FileStatus[]> getLeafFiles(Path path) {
      FileStatus status = statuses.get(path);
      return status == null ? Option.empty() : Option.apply(new FileStatus[] {status});
    }

    @Override
    public void putLeafFiles(Path path, FileStatus[] files) {}

    @Override
    public void invalidateAll() {}
  }
}
