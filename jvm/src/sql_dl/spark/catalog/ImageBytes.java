package sql_dl.spark.catalog;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.io.Serializable;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.NoSuchFileException;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.SparkContext;
import org.apache.spark.SparkEnv;
import org.apache.spark.deploy.SparkHadoopUtil;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.expressions.objects.Invoke;
import org.apache.spark.sql.types.AbstractDataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.unsafe.types.UTF8String;
import org.apache.spark.util.LongAccumulator;
import scala.jdk.javaapi.CollectionConverters;
import sql_dl.spark.SkippedFiles;

/**
 * An image view's {@code image} column, read by path on the executor when a row needs it:
 * sql_dl's extension puts {@link #of}{@code (path)} in place of the column, so that
 * {@code count(*)}, filters and sorts on the view's other columns read no image, and a top-N
 * reads the images of the rows it returns only. The expression is Spark's {@code Invoke} of
 * {@link #read} on this object; {@code EXPLAIN} shows it as
 * {@code invoke(sql_dl_image_bytes.read(path#..))}.
 *
 * <p>A file deleted since the catalog listed it gives NULL, and its path goes to
 * {@link SkippedFiles}. Each read is counted ({@link #total}).
 */
public final class ImageBytes implements Serializable {

  private static final long serialVersionUID = 1L;
  private static LongAccumulator registered;
  private static SparkContext owner;
  private static Configuration executorConf;

  private final SkippedFiles skipped;
  private final LongAccumulator reads;

  private ImageBytes(SkippedFiles skipped, LongAccumulator reads) {
    this.skipped = skipped;
    this.reads = reads;
  }

  /** The expression reading the file {@code path} names, counted in {@code context}. */
  public static Expression of(Expression path, SparkContext context) {
    ImageBytes reader = new ImageBytes(SkippedFiles.forContext(context), counter(context));
    return new Invoke(Literal.fromObject(reader), "read", DataTypes.BinaryType,
        CollectionConverters.asScala(java.util.List.of(path)).toList(),
        CollectionConverters.asScala(java.util.List.<AbstractDataType>of()).toList(),
        true, true, true);
  }

  /** Whether {@code e} is such an expression. */
  public static boolean is(Expression e) {
    return e instanceof Invoke i && i.targetObject() instanceof Literal l
        && l.value() instanceof ImageBytes;
  }

  private static synchronized LongAccumulator counter(SparkContext context) {
    if (registered == null || owner != context) {
      registered = context.longAccumulator("sql_dl image files read");
      owner = context;
    }
    return registered;
  }

  /** How many image files queries of this driver read (a running total). */
  public static synchronized long total() {
    return registered == null ? 0 : registered.value();
  }

  /** The bytes of the file, or null when it was deleted. */
  public byte[] read(UTF8String value) {
    String file = value.toString();
    try {
      Path p = new Path(file);
      java.net.URI uri = p.toUri();
      byte[] bytes = uri.getScheme() == null || "file".equals(uri.getScheme())
          ? readLocal(java.nio.file.Path.of(uri.getPath())) : readThroughHadoop(p);
      reads.add(1);
      return bytes;
    } catch (FileNotFoundException | NoSuchFileException e) {
      skipped.add(file);
      return null;
    } catch (IOException e) {
      throw new IllegalStateException("cannot read the image file " + file + ": " + e, e);
    }
  }

  /**
   * A local file read directly: one open, size and read, where Hadoop's local file system
   * reads the status, looks for a checksum file and copies through its buffers (about 40 us
   * more per small image).
   */
  private static byte[] readLocal(java.nio.file.Path file) throws IOException {
    try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
      ByteBuffer buffer = ByteBuffer.allocate(checkedLength(channel.size()));
      while (buffer.hasRemaining() && channel.read(buffer) >= 0) {
        // until full, or the end of a file shortened since its size was read
      }
      return buffer.hasRemaining() ? Arrays.copyOf(buffer.array(), buffer.position())
          : buffer.array();
    }
  }

  private static byte[] readThroughHadoop(Path p) throws IOException {
    FileSystem fs = p.getFileSystem(conf());
    byte[] bytes = new byte[checkedLength(fs.getFileStatus(p).getLen())];
    try (InputStream in = fs.open(p)) {
      int read = in.readNBytes(bytes, 0, bytes.length);
      return read < bytes.length ? Arrays.copyOf(bytes, read) : bytes;  // shortened since
    }
  }

  private static int checkedLength(long length) throws IOException {
    if (length > Integer.MAX_VALUE - 16) {
      throw new IOException("the file is larger than 2 GB");
    }
    return (int) length;
  }

  private static synchronized Configuration conf() {
    if (executorConf == null) {
      SparkEnv env = SparkEnv.get();
      executorConf = env == null ? new Configuration()
          : SparkHadoopUtil.get().newConfiguration(env.conf());
    }
    return executorConf;
  }

  @Override
  public String toString() {
    return "sql_dl_image_bytes";
  }
}
