package sql_dl.spark.plugin;

import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.parser.ParameterContext;
import org.apache.spark.sql.catalyst.parser.ParseException;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.apache.spark.sql.catalyst.parser.SqlStatementSplitResult;
import org.apache.spark.sql.catalyst.parser.TemporalIdentifier;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;
import scala.collection.immutable.Seq;

/**
 * A session's SQL parser that registers the manifest in the session first
 * ({@link SessionRegistration#ensure}), for statements, expressions and names (a DataFrame's
 * {@code table("photos")} or {@code expr("m(image)")} of a Spark Connect client), then parses
 * as {@code delegate} does; types are parsed without it. Checked against Spark 4.3.0's
 * {@code ParserInterface}.
 */
final class ManifestParser implements ParserInterface {

  private final ParserInterface delegate;
  private final SessionRegistration registration;

  ManifestParser(ParserInterface delegate, SessionRegistration registration) {
    this.delegate = delegate;
    this.registration = registration;
  }

  @Override
  public LogicalPlan parsePlan(String sqlText) throws ParseException {
    registration.ensure(sqlText);
    return delegate.parsePlan(sqlText);
  }

  @Override
  public LogicalPlan parsePlanWithParameters(String sqlText, ParameterContext context)
      throws ParseException {
    registration.ensure(sqlText);
    return delegate.parsePlanWithParameters(sqlText, context);
  }

  @Override
  public LogicalPlan parseQuery(String sqlText) throws ParseException {
    registration.ensure(sqlText);
    return delegate.parseQuery(sqlText);
  }

  @Override
  public Expression parseExpression(String sqlText) throws ParseException {
    registration.ensure(null);
    return delegate.parseExpression(sqlText);
  }

  @Override
  public TableIdentifier parseTableIdentifier(String sqlText) throws ParseException {
    registration.ensure(null);
    return delegate.parseTableIdentifier(sqlText);
  }

  @Override
  public FunctionIdentifier parseFunctionIdentifier(String sqlText) throws ParseException {
    registration.ensure(null);
    return delegate.parseFunctionIdentifier(sqlText);
  }

  @Override
  public Seq<String> parseMultipartIdentifier(String sqlText) throws ParseException {
    registration.ensure(null);
    return delegate.parseMultipartIdentifier(sqlText);
  }

  @Override
  public TemporalIdentifier parseTemporalTableIdentifier(String sqlText) throws ParseException {
    registration.ensure(null);
    return delegate.parseTemporalTableIdentifier(sqlText);
  }

  @Override
  public StructType parseRoutineParam(String sqlText) throws ParseException {
    return delegate.parseRoutineParam(sqlText);
  }

  @Override
  public SqlStatementSplitResult splitStatements(String sqlText) {
    return delegate.splitStatements(sqlText);
  }

  @Override
  public StructType parseTableSchema(String sqlText) throws ParseException {
    return delegate.parseTableSchema(sqlText);
  }

  @Override
  public DataType parseDataType(String sqlText) throws ParseException {
    return delegate.parseDataType(sqlText);
  }
}
