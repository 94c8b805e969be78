package sql_dl.spark.catalog;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.UUID;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.parquet.example.data.Group;
import org.apache.parquet.example.data.simple.SimpleGroupFactory;
import org.apache.parquet.hadoop.ParquetFileReader;
import org.apache.parquet.hadoop.ParquetFileWriter;
import org.apache.parquet.hadoop.ParquetReader;
import org.apache.parquet.hadoop.ParquetWriter;
import org.apache.parquet.hadoop.example.ExampleParquetWriter;
import org.apache.parquet.hadoop.example.GroupReadSupport;
import org.apache.parquet.hadoop.metadata.CompressionCodecName;
import org.apache.parquet.hadoop.util.HadoopInputFile;
import org.apache.parquet.schema.MessageType;
import org.apache.parquet.schema.MessageTypeParser;

/**
 * A catalog's segments: Parquet files of {@code path, length, modification_time}, one row per
 * image, the rows of a folder together in one segment. Spark reads them as the view's
 * relation; sql_dl writes them on the driver (a refresh) or in executors (a parallel build)
 * with Parquet's own writer.
 */
final class Segments {

  /** Rows a segment gets before the next folder starts a new one. */
  static final int ROWS = 16384;
  static final MessageType SCHEMA = MessageTypeParser.parseMessageType(
      "message sql_dl_image_catalog { required binary path (STRING); required int64 length; "
      + "required int64 modification_time (TIMESTAMP(MICROS,true)); }");
  /** The catalog is the account's own: its folder 0700, its files 0600. */
  static final FsPermission PRIVATE_FOLDER = new FsPermission((short) 0700);
  static final FsPermission PRIVATE_FILE = new FsPermission((short) 0600);
  private static final SimpleGroupFactory ROWS_OF = new SimpleGroupFactory(SCHEMA);

  private Segments() {}

  /** A segment written: its file name (in the catalog's folder) and its size. */
  record Written(String file, long rows, long bytes) implements java.io.Serializable {}

  /** Makes {@code folder}, and each missing folder above it, 0700: Hadoop's own mkdirs
   *  gives missing parents its default mode (0755 under the usual umask setting). */
  static void privateFolder(Path folder, Configuration conf) throws IOException {
    FileSystem fs = folder.getFileSystem(conf);
    java.util.Deque<Path> missing = new java.util.ArrayDeque<>();
    for (Path p = folder; p != null && !fs.exists(p); p = p.getParent()) {
      missing.push(p);
    }
    for (Path p : missing) {
      fs.mkdirs(p, PRIVATE_FOLDER);
      fs.setPermission(p, PRIVATE_FOLDER);
    }
  }

  static Path file(Path catalog, String name) {
    return new Path(catalog, name);
  }

  static String newName() {
    return "segment-" + UUID.randomUUID() + ".parquet";
  }

  /**
   * Writes rows folder by folder into new segments of about {@link #ROWS} rows each.
   * {@link #folder} before each folder's files; {@link #close} returns the segments.
   */
  static final class Sink implements AutoCloseable {
    private final Path catalog;
    private final Configuration conf;
    private final List<Written> written = new ArrayList<>();
    private ParquetWriter<Group> writer;
    private String name;
    private long rows;

    Sink(Path catalog, Configuration conf) throws IOException {
      this.catalog = catalog;
      this.conf = conf;
      privateFolder(catalog, conf);
    }

    /** The segment the next folder's files go to (a new one past ROWS rows). */
    String folder() throws IOException {
      if (writer != null && rows >= ROWS) {
        finish();
      }
      if (writer == null) {
        name = newName();
        writer = ExampleParquetWriter.builder(file(catalog, name)).withConf(conf)
            .withType(SCHEMA).withCompressionCodec(CompressionCodecName.SNAPPY)
            .withWriteMode(ParquetFileWriter.Mode.OVERWRITE).withRowGroupSize(8L << 20)
            .withDictionaryEncoding(false).build();
        rows = 0;
      }
      return name;
    }

    void add(String path, long length, long modifiedMillis) throws IOException {
      writer.write(ROWS_OF.newGroup().append("path", path).append("length", length)
          .append("modification_time", modifiedMillis * 1000));
      rows++;
    }

    void add(FileStatus file) throws IOException {
      add(file.getPath().toString(), file.getLen(), file.getModificationTime());
    }

    private void finish() throws IOException {
      writer.close();
      FileSystem fs = catalog.getFileSystem(conf);
      fs.setPermission(file(catalog, name), PRIVATE_FILE);
      written.add(new Written(name, rows, fs.getFileStatus(file(catalog, name)).getLen()));
      writer = null;
    }

    /** The segments written, each closed. */
    List<Written> segments() throws IOException {
      if (writer != null) {
        finish();
      }
      return written;
    }

    @Override
    public void close() throws IOException {
      if (writer != null) {
        writer.close();
        writer = null;
      }
    }
  }

  /** Calls {@code row} with (path, length, modification time in ms) for each row of a
   *  segment whose folder is not in {@code leaveOut}. */
  static void read(Path segment, Configuration conf, Set<String> leaveOut, RowConsumer row)
      throws IOException {
    try (ParquetReader<Group> reader = ParquetReader.builder(new GroupReadSupport(), segment)
        .withConf(conf).build()) {
      for (Group g = reader.read(); g != null; g = reader.read()) {
        String path = g.getString("path", 0);
        int slash = path.lastIndexOf('/');
        if (leaveOut.isEmpty() || !leaveOut.contains(slash < 0 ? "" : path.substring(0, slash))) {
          row.accept(path, g.getLong("length", 0), g.getLong("modification_time", 0) / 1000);
        }
      }
    }
  }

  /** The number of rows a segment's footer declares (a truncated file throws). */
  static long footerRows(Path segment, Configuration conf) throws IOException {
    try (ParquetFileReader reader = ParquetFileReader.open(
        HadoopInputFile.fromPath(segment, conf))) {
      return reader.getRecordCount();
    }
  }

  @FunctionalInterface
  interface RowConsumer {
    void accept(String path, long length, long modifiedMillis) throws IOException;
  }
}
