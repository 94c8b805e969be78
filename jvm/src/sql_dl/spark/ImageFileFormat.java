package sql_dl.spark;

import java.io.FileNotFoundException;
import java.io.Serializable;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.execution.datasources.PartitionedFile;
import org.apache.spark.sql.execution.datasources.binaryfile.BinaryFileFormat;
import org.apache.spark.sql.sources.Filter;
import org.apache.spark.sql.types.StructType;
import scala.Function1;
import scala.collection.Iterator;
import scala.collection.immutable.Map;
import scala.collection.immutable.Seq;
import scala.runtime.AbstractFunction1;

/**
 * Spark's {@code binaryFile} format for sql_dl's image folders: a file deleted between the
 * listing and the read gives no row, and its path goes to {@link SkippedFiles}, instead of a
 * failed task. Put in place of {@code BinaryFileFormat} by {@link LiveImageFolders}.
 */
public final class ImageFileFormat extends BinaryFileFormat {

  private final SkippedFiles skipped;

  ImageFileFormat(SkippedFiles skipped) {
    this.skipped = skipped;
  }

  @Override
  public Function1<PartitionedFile, Iterator<InternalRow>> buildReader(
      SparkSession session, StructType dataSchema, StructType partitionSchema,
      StructType requiredSchema, Seq<Filter> filters, Map<String, String> options,
      Configuration hadoopConf) {
    return new SkipDeleted(super.buildReader(session, dataSchema, partitionSchema,
        requiredSchema, filters, options, hadoopConf), skipped);
  }

  /**
   * Equal to itself only: {@code BinaryFileFormat} is a case class without fields, equal to
   * any other, and a plan whose relation compares equal after {@link LiveImageFolders}
   * replaced it keeps the old one.
   */
  @Override
  public boolean equals(Object other) {
    return other == this;
  }

  @Override
  public int hashCode() {
    return System.identityHashCode(this);
  }

  @Override
  public boolean canEqual(Object other) {
    return other == this;
  }

  /** Reads a file as {@code read} does, or gives no row if it no longer exists. */
  static final class SkipDeleted extends AbstractFunction1<PartitionedFile, Iterator<InternalRow>>
      implements Serializable {
    private final Function1<PartitionedFile, Iterator<InternalRow>> read;
    private final SkippedFiles skipped;

    SkipDeleted(Function1<PartitionedFile, Iterator<InternalRow>> read, SkippedFiles skipped) {
      this.read = read;
      this.skipped = skipped;
    }

    @Override
    public Iterator<InternalRow> apply(PartitionedFile file) {
      try {
        return read.apply(file);  // binaryFile reads the whole file here
      } catch (Exception e) {  // Scala functions throw checked exceptions undeclared
        if (!(e instanceof FileNotFoundException)) {
          throw ImageFileFormat.<RuntimeException>unchecked(e);
        }
        skipped.add(file.toPath().toString());
        return scala.collection.Iterator$.MODULE$.empty();
      }
    }
  }

  @SuppressWarnings("unchecked")
  private static <E extends Exception> E unchecked(Exception e) throws E {
    throw (E) e;
  }
}
