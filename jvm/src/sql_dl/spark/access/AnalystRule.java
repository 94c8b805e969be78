package sql_dl.spark.access;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.analysis.AnalysisContext;
import org.apache.spark.sql.catalyst.analysis.LocalTempView$;
import org.apache.spark.sql.catalyst.analysis.UnresolvedRelation;
import org.apache.spark.sql.catalyst.catalog.HiveTableRelation;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.CallMethodViaReflection;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.In;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.expressions.Lower;
import org.apache.spark.sql.catalyst.expressions.PythonUDF;
import org.apache.spark.sql.catalyst.expressions.RuntimeReplaceable;
import org.apache.spark.sql.catalyst.expressions.SubqueryExpression;
import org.apache.spark.sql.catalyst.expressions.UserDefinedExpression;
import org.apache.spark.sql.catalyst.plans.logical.CTERelationRef;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.Filter;
import org.apache.spark.sql.catalyst.plans.logical.InsertIntoDir;
import org.apache.spark.sql.catalyst.plans.logical.LeafNode;
import org.apache.spark.sql.catalyst.plans.logical.LocalRelation;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.OneRowRelation;
import org.apache.spark.sql.catalyst.plans.logical.Range;
import org.apache.spark.sql.catalyst.plans.logical.ScriptTransformation;
import org.apache.spark.sql.catalyst.plans.logical.View;
import org.apache.spark.sql.catalyst.rules.Rule;
import org.apache.spark.sql.execution.command.CreateViewCommand;
import org.apache.spark.sql.execution.command.SetCommand;
import org.apache.spark.sql.execution.datasources.DataSource$;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import org.apache.spark.sql.types.DataTypes;
import scala.Function1;
import scala.Option;
import scala.Tuple2;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractPartialFunction;

/**
 * The access policy's rule: refuses, as Spark analyses a statement and before any job runs,
 * what an analyst of {@code sql-dl serve} may not do (see {@link AccessPolicy}). Injected as
 * a post-hoc resolution rule, it sees the resolved plan before Spark's own checks (so an
 * analyst reads sql_dl's reason, not Spark's restricted-mode error) and does nothing when no
 * policy is installed, or for the server and admins.
 *
 * <p>An analyst may run queries over the manifest's views ({@code default.<view>}) and their
 * own temporary views, with Spark's built-in functions and the sql_dl functions granted to
 * them; {@code SHOW}, {@code DESCRIBE}, {@code EXPLAIN}, {@code USE}, {@code RESET},
 * temporary views and session variables; and {@code SET} of the settable settings. Any
 * other statement, relation or user-defined function is refused: the list is of what is
 * allowed, so a statement Spark adds later is refused until it is judged.
 *
 * <p>View bodies that Spark analyses on their own (nested view depth above 0) are judged
 * with the view, at the outer level. Path relations ({@code text.`/etc`}) stay unresolved
 * because {@code sql-dl serve} turns {@code spark.sql.runSQLOnFiles} off, so no file is
 * touched before this rule refuses them.
 */
public final class AnalystRule extends Rule<LogicalPlan> {

  /** Statements an analyst may run, by the class Spark resolves them to. */
  private static final Set<String> ALLOWED = Set.of(
      "ResetCommand", "SetNamespaceCommand", "SetCatalogAndNamespace", "SetCatalogCommand",
      "ExplainCommand", "DropTempViewCommand", "CreateVariable", "SetVariable",
      "DropVariable");

  /** What a refused statement does, by the class Spark resolves it to. */
  private static final Map<String, String> DOES = Map.ofEntries(
      Map.entry("AddJarsCommand", "ADD JAR loads code into the server"),
      Map.entry("AddFilesCommand", "ADD FILE loads files into the server"),
      Map.entry("AddArchivesCommand", "ADD ARCHIVE loads files into the server"),
      Map.entry("CreateFunctionCommand", "CREATE FUNCTION loads code into the server"),
      Map.entry("CreateFunction", "CREATE FUNCTION loads code into the server"),
      Map.entry("CreateUserDefinedFunctionCommand", "CREATE FUNCTION loads code into the server"),
      Map.entry("CreateUserDefinedFunction", "CREATE FUNCTION loads code into the server"),
      Map.entry("CreateSQLFunctionCommand", "CREATE FUNCTION loads code into the server"),
      Map.entry("LoadDataCommand", "LOAD DATA reads files by path"),
      Map.entry("LoadData", "LOAD DATA reads files by path"),
      Map.entry("InsertIntoDataSourceDirCommand", "INSERT OVERWRITE DIRECTORY writes files by path"),
      Map.entry("InsertIntoHiveDirCommand", "INSERT OVERWRITE DIRECTORY writes files by path"),
      Map.entry("CreateTempViewUsing", "CREATE VIEW ... USING reads files by path"),
      Map.entry("CacheTable", "CACHE TABLE changes the cache every session shares"),
      Map.entry("CacheTableAsSelect", "CACHE TABLE changes the cache every session shares"),
      Map.entry("CacheTableCommand", "CACHE TABLE changes the cache every session shares"),
      Map.entry("CacheTableAsSelectCommand", "CACHE TABLE changes the cache every session shares"),
      Map.entry("UncacheTable", "UNCACHE TABLE changes the cache every session shares"),
      Map.entry("UncacheTableCommand", "UNCACHE TABLE changes the cache every session shares"),
      Map.entry("ClearCacheCommand", "CLEAR CACHE changes the cache every session shares"),
      Map.entry("RefreshResource", "REFRESH changes the cache every session shares"),
      Map.entry("RefreshTable", "REFRESH TABLE changes the cache every session shares"),
      Map.entry("RefreshTableCommand", "REFRESH TABLE changes the cache every session shares"),
      Map.entry("RefreshFunctionCommand", "REFRESH FUNCTION loads code into the server"),
      Map.entry("ListJarsCommand", "LIST JAR shows files of the server"),
      Map.entry("ListFilesCommand", "LIST FILE shows files of the server"),
      Map.entry("ListArchivesCommand", "LIST ARCHIVE shows files of the server"));

  /** How refused persistent DDL and DML read, where the class name says it otherwise. */
  private static final Map<String, String> STATEMENTS = Map.of(
      "DropTableCommand", "DROP TABLE or VIEW",
      "CreateDataSourceTableCommand", "CREATE TABLE",
      "CreateDataSourceTableAsSelectCommand", "CREATE TABLE AS SELECT",
      "CreateTableCommand", "CREATE TABLE",
      "CreateNamespace", "CREATE DATABASE",
      "DropNamespace", "DROP DATABASE",
      "AlterViewAsCommand", "ALTER VIEW");

  /** The built-in functions that parse XML: their parsers fetch external DTDs (checked on
   *  4.3.0: {@code xpath_string('<!DOCTYPE a SYSTEM "http://host/x.dtd"><a/>', 'a')} sends a
   *  request to host). */
  private static final Set<String> XML_PARSERS = Set.of(
      "XPathBoolean", "XPathShort", "XPathInt", "XPathLong", "XPathFloat", "XPathDouble",
      "XPathString", "XPathList", "XmlToStructs", "SchemaOfXml");

  private final SparkSession session;

  public AnalystRule(SparkSession session) {
    this.session = session;
  }

  @Override
  public LogicalPlan apply(LogicalPlan plan) {
    AccessPolicy policy = AccessPolicy.current();
    if (policy == null || AnalysisContext.get().nestedViewDepth() > 0) {
      return plan;
    }
    AccessPolicy.Analyst analyst = policy.analystIn(session);
    if (analyst == null) {
      return plan;
    }
    new Judge(session, policy, analyst).plan(plan);
    return plan.resolveOperatorsUp(new AbstractPartialFunction<LogicalPlan, LogicalPlan>() {
      @Override
      public boolean isDefinedAt(LogicalPlan node) {
        return visibleRows(session, node, policy, analyst) != null;
      }

      @Override
      public <A1 extends LogicalPlan, B1> B1 applyOrElse(A1 node, Function1<A1, B1> otherwise) {
        @SuppressWarnings("unchecked")
        B1 result = isDefinedAt(node) ? (B1) visibleRows(session, node, policy, analyst)
            : otherwise.apply(node);
        return result;
      }
    });
  }

  /**
   * A system view of the default database ({@code sql_dl_models}, {@code sql_dl_views} ...)
   * with only the rows of what {@code analyst} may use, else null: an analyst sees neither
   * the functions, models nor views granted to others only.
   */
  private static LogicalPlan visibleRows(SparkSession session, LogicalPlan node,
      AccessPolicy policy, AccessPolicy.Analyst analyst) {
    if (!(node instanceof View view) || view.child() instanceof Filter) {
      return null;  // (a Filter: kept already)
    }
    TableIdentifier identifier = view.desc().identifier();
    if (view.isTempView() ? !PluginViews.isOurs(session, identifier.table())
        : !identifier.database().isDefined()
          || !identifier.database().get().equalsIgnoreCase("default")) {
      return null;  // (plugin mode's system views are temporary views of each session)
    }
    Map.Entry<String, Set<String>> visible = policy.visibleRows(identifier.table(), analyst);
    if (visible == null) {
      return null;
    }
    Expression column = null;
    for (Attribute a : CollectionConverters.asJava(view.child().output())) {
      if (a.name().equalsIgnoreCase(visible.getKey())) {
        column = a;
      }
    }
    if (column == null) {
      throw new IllegalStateException(identifier + " has no column " + visible.getKey());
    }
    List<Expression> names = new ArrayList<>();
    for (String name : visible.getValue()) {
      names.add(Literal.create(name, DataTypes.StringType));
    }
    Expression kept = new In(new Lower(column), CollectionConverters.asScala(names).toSeq());
    return view.withNewChildren(CollectionConverters.asScala(
        List.<LogicalPlan>of(new Filter(kept, view.child()))).toSeq());
  }

  /** Judges one statement of one analyst. */
  private static final class Judge {
    private final SparkSession session;
    private final AccessPolicy policy;
    private final AccessPolicy.Analyst analyst;

    Judge(SparkSession session, AccessPolicy policy, AccessPolicy.Analyst analyst) {
      this.session = session;
      this.policy = policy;
      this.analyst = analyst;
    }

    private AccessDenied deny(String does) {
      return refusal(does + "; only admins may");
    }

    private AccessDenied refusal(String why) {
      return new AccessDenied(why + ". Received: user="
          + (analyst.user().isEmpty() ? "(none)" : analyst.user()));
    }

    void plan(LogicalPlan node) {
      if (node instanceof View view && !view.isTempView()) {
        view(view.desc().identifier());
        return;  // the manifest's views are the server's, and judged as a whole
      }
      if (node instanceof View view && PluginViews.isOurs(session, view.desc().identifier()
                                                                    .table())) {
        view(TableIdentifier.apply(view.desc().identifier().table(), Option.apply("default")));
        return;  // plugin mode's: each session's temporary views, judged the same way
      }
      if (node instanceof ScriptTransformation) {
        throw deny("TRANSFORM runs programs on the server");
      }
      if (node instanceof InsertIntoDir) {
        throw deny("INSERT OVERWRITE DIRECTORY writes files by path");
      }
      if (node instanceof Command && !command(node)) {
        return;  // allowed, and nothing below it runs as part of it
      }
      if (node instanceof LeafNode && !(node instanceof Command)) {
        leaf(node);
      }
      for (Expression expression : CollectionConverters.asJava(node.expressions())) {
        expression(expression);
      }
      for (LogicalPlan child : CollectionConverters.asJava(node.children())) {
        plan(child);
      }
    }

    /** Refuses a refused command; says whether what is below an allowed one is judged too. */
    private boolean command(LogicalPlan node) {
      String name = node.getClass().getSimpleName().replace("$", "");
      if (node instanceof SetCommand set) {
        setting(set.kv());
        return false;
      }
      if (node instanceof CreateViewCommand create) {
        if (create.viewType() == LocalTempView$.MODULE$) {
          return true;
        }
        throw deny(create.viewType().toString().startsWith("Global")
            ? "CREATE GLOBAL TEMPORARY VIEW makes a view every session shares"
            : "CREATE VIEW changes the catalog every session shares (analysts may create "
              + "temporary views)");
      }
      if (ALLOWED.contains(name)) {
        return true;
      }
      if (name.startsWith("Show") || name.startsWith("Describe")) {
        return false;  // metadata
      }
      String does = DOES.get(name);
      throw deny(does != null ? does : statement(name) + " changes the catalog or files every "
          + "session shares (persistent DDL and DML)");
    }

    /** {@code TruncateTableCommand} reads as {@code TRUNCATE TABLE}. */
    private static String statement(String className) {
      String known = STATEMENTS.get(className);
      return known != null ? known : className.replaceAll("(Command|Statement)$", "")
          .replaceAll("([a-z])([A-Z])", "$1 $2").toUpperCase(Locale.ROOT);
    }

    private void setting(Option<Tuple2<String, Option<String>>> kv) {
      if (kv.isEmpty()) {
        throw deny("SET lists every setting of the server");
      }
      String key = kv.get()._1();
      if (policy.settable(key) || (kv.get()._2().isEmpty() && key.equals("-v"))) {
        return;
      }
      throw deny("SET " + key + (kv.get()._2().isEmpty() ? " reads" : " changes")
          + " a setting of the server (analysts may set " + String.join(", ", policy.settable())
          + ")");
    }

    private void leaf(LogicalPlan node) {
      if (node instanceof LocalRelation || node instanceof OneRowRelation
          || node instanceof Range || node instanceof CTERelationRef) {
        return;
      }
      if (node instanceof UnresolvedRelation relation) {
        pathRelation(relation);
        return;  // not found: Spark says so
      }
      if (node.getClass().getSimpleName().startsWith("Resolved")) {
        return;  // a name Spark resolved (ResolvedNamespace of USE): nothing is read
      }
      String table = node.nodeName();
      if (node instanceof LogicalRelation relation && relation.catalogTable().isDefined()) {
        table = relation.catalogTable().get().identifier().unquotedString();
      } else if (node instanceof HiveTableRelation relation) {
        table = relation.tableMeta().identifier().unquotedString();
      }
      throw refusal(table + " is not one of the manifest's views; only admins may read it");
    }

    private void pathRelation(UnresolvedRelation relation) {
      var parts = CollectionConverters.asJava(relation.multipartIdentifier());
      if (parts.size() != 2) {
        return;
      }
      try {
        DataSource$.MODULE$.lookupDataSource(parts.get(0), relation.conf());
      } catch (Exception | LinkageError notASource) {
        return;
      }
      throw deny(parts.get(0) + ".`...` reads files by path (query the manifest's views)");
    }

    private void view(TableIdentifier identifier) {
      String database = identifier.database().isDefined() ? identifier.database().get() : "";
      String entry = database.equalsIgnoreCase("default")
          ? policy.viewEntry(identifier.table()) : null;
      if (entry == null) {
        throw refusal("view " + identifier.unquotedString() + " is not one of the manifest's "
            + "views; only admins may read it");
      }
      granted("view " + identifier.table(), entry);
    }

    private void expression(Expression expression) {
      if (expression instanceof CallMethodViaReflection) {
        throw deny("reflect, java_method and try_reflect call Java methods on the server");
      }
      if (XML_PARSERS.contains(expression.getClass().getSimpleName())) {
        throw deny("xpath functions, from_xml and schema_of_xml fetch the external documents "
            + "(DTDs) an XML text names, from any host");
      }
      if (expression instanceof PythonUDF udf) {
        String entry = policy.functionEntry(udf.name());
        if (entry == null) {
          throw deny("function " + udf.name() + " is not one of sql_dl's functions");
        }
        granted("function " + udf.name(), entry);
      } else if (expression instanceof UserDefinedExpression udf) {
        throw deny("function " + udf.name() + " is neither one of sql_dl's functions nor "
            + "one of Spark's built-in functions");
      }
      if (expression instanceof RuntimeReplaceable replaceable) {
        expression(replaceable.replacement());
      }
      if (expression instanceof SubqueryExpression subquery) {
        plan(subquery.plan());
      }
      for (Expression child : CollectionConverters.asJava(expression.children())) {
        expression(child);
      }
    }

    private void granted(String what, String entry) {
      Set<String> grantees = policy.grantees(entry);
      if (grantees == null || grantees.stream().anyMatch(analyst.principals()::contains)) {
        return;
      }
      throw refusal(what + " (of " + entry + ") is granted to "
          + String.join(", ", new java.util.TreeSet<>(grantees)) + " only");
    }
  }
}
