package sql_dl.spark;

import org.apache.spark.sql.SparkSessionExtensions;
import scala.Function1;
import scala.runtime.BoxedUnit;

/**
 * sql_dl's Spark session extensions, for {@code spark.sql.extensions=sql_dl.spark.SqlDlExtensions}
 * (which {@code sql_dl.session}, {@code sql-dl sql} and {@code sql-dl serve} set): every
 * session, Thrift Server sessions included, gets {@link TopNBeforePython} and
 * {@link ReleasePythonWorkers}.
 */
public final class SqlDlExtensions implements Function1<SparkSessionExtensions, BoxedUnit> {

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    extensions.injectPreCBORule(session -> new TopNBeforePython());
    extensions.injectColumnar(session -> new ReleasePythonWorkers());
    return BoxedUnit.UNIT;
  }
}
