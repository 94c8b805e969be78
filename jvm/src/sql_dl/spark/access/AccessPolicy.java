package sql_dl.spark.access;

import java.lang.reflect.Field;
import java.lang.reflect.Proxy;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Predicate;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hive.service.cli.session.HiveSession;
import org.apache.hive.service.cli.session.HiveSessionImpl;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.CurrentUserContext;
import org.apache.spark.sql.internal.SQLConf;
import scala.jdk.javaapi.CollectionConverters;

/**
 * {@code sql-dl serve}'s access policy: who is an admin, what is granted to whom, which
 * settings analysts may change. {@code sql-dl serve} installs it ({@link #install}) and
 * installs it again at each reload; without it (notebooks, {@code sql-dl sql}) nothing is
 * restricted.
 *
 * <p>Who runs a statement: the Thrift Server sets {@link CurrentUserContext} to the session's
 * user for every operation; sql_dl's operation manager has made that name canonical
 * ({@link #prepare}). The server's own work (bootstrap, publication, system views) runs with
 * no user in a session that is not a JDBC session, and is not restricted. A JDBC session
 * without a user (Spark's {@code USE} as a session opens) is an analyst.
 */
public final class AccessPolicy {

  /** Whoever is neither the server nor an admin; {@code principals} are the user's name and
   *  {@code group:NAME} for each of the user's LDAP groups. */
  record Analyst(String user, Set<String> principals) {}

  private static volatile AccessPolicy current;
  /** Set while the thread does the server's own work in a user's session (plugin mode
   *  registering the manifest there as the session's first statement starts). */
  private static final ThreadLocal<Boolean> SERVER_WORK = ThreadLocal.withInitial(() -> false);
  private static volatile Predicate<SparkSession> jdbcSessions = session -> false;
  private static final ObjectMapper JSON = new ObjectMapper();
  /** The Thrift Server's setting that names the scheduler pool of a session's jobs. */
  private static final String POOL = "spark.sql.thriftserver.scheduler.pool";

  private final Set<String> admins;
  private final Map<String, Set<String>> grants;
  private final Map<String, String> functions;
  private final Map<String, String> views;
  private final Set<String> settable;
  private final Map<String, List<String>> rows;
  private final Map<String, Map<String, String>> indexes;
  private final LdapGroups groups;

  private AccessPolicy(Map<String, Object> spec) {
    admins = principals(spec.get("admins"));
    grants = new HashMap<>();
    Map<String, Object> granted = map(spec.get("grants"));
    granted.forEach((entry, to) -> grants.put(lower(entry), principals(to)));
    functions = lowerKeys(map(spec.get("functions")));
    views = lowerKeys(map(spec.get("views")));
    settable = new TreeSet<>(strings(spec.get("settable")));
    rows = new HashMap<>();
    map(spec.get("rows")).forEach((view, columnAndKind) ->
        rows.put(lower(view), strings(columnAndKind)));
    indexes = new HashMap<>();
    map(spec.get("indexes")).forEach((index, uses) -> {
      Map<String, String> entries = new java.util.LinkedHashMap<>();
      map(uses).forEach((what, entry) -> entries.put(what, String.valueOf(entry)));
      indexes.put(lower(index), entries);
    });
    Map<String, Object> ldap = map(spec.get("ldap"));
    Map<String, String> ldapSettings = new HashMap<>();
    ldap.forEach((k, v) -> ldapSettings.put(k, String.valueOf(v)));
    groups = ldap.isEmpty() ? null : new LdapGroups(ldapSettings);
  }

  /**
   * Makes {@code spec} (JSON: {@code admins}, {@code grants} by entry, sql_dl's
   * {@code functions} and {@code views} with the entry each belongs to ({@code ""}: open to
   * all), the {@code settable} settings, the {@code ldap} settings for group grants, and the
   * system views whose {@code rows} an analyst sees only as far as granted: each view's column
   * and the kind it names, {@code function}, {@code model} or {@code view}) the policy of
   * every statement from now on.
   */
  public static void install(String spec) throws java.io.IOException {
    current = new AccessPolicy(JSON.readValue(spec, new TypeReference<Map<String, Object>>() {}));
  }

  /** Runs {@code work} as the server's own work: not restricted, whoever's session it is. */
  public static void asServer(Runnable work) {
    boolean was = SERVER_WORK.get();
    SERVER_WORK.set(true);
    try {
      work.run();
    } finally {
      SERVER_WORK.set(was);
    }
  }

  /**
   * Before a statement of plugin mode's session {@code session} (in a stock Thrift Server,
   * which sets {@link CurrentUserContext} for each statement; sql_dl's operation manager does
   * not run there): for an analyst, puts back the settings analysts may not change, as
   * {@link #prepare} does, and puts the jobs in the user's {@link #pool}.
   */
  public static void prepareStatement(SparkSession session) {
    AccessPolicy policy = current;
    String user = CurrentUserContext.CURRENT_USER().get();
    if (policy == null || user == null || SERVER_WORK.get()) {
      return;
    }
    if (policy.analyst(canonical(user)) != null) {
      policy.restoreSettings(session);
    }
    session.sessionState().conf().setConfString(POOL, pool(canonical(user)));
  }

  /**
   * Before an index's table function searches in {@code session}: refuses an analyst who may
   * not use what the index reads, its view and its function (the {@code indexes} of the
   * policy: each index's {@code "view <name>"} and {@code "function <name>"} with their
   * entries).
   */
  public static void checkIndex(SparkSession session, String index) {
    AccessPolicy policy = current;
    Analyst analyst = policy == null || session == null ? null : policy.analystIn(session);
    if (analyst == null) {
      return;
    }
    Map<String, String> uses = policy.indexes.get(lower(index));
    if (uses == null) {
      throw new AccessDenied("index " + index + " is not one of the manifest's; only admins "
          + "may use it. Received: user=" + (analyst.user().isEmpty() ? "(none)" : analyst.user()));
    }
    uses.forEach((what, entry) -> {
      Set<String> to = policy.grantees(entry);
      if (to != null && Collections.disjoint(to, analyst.principals())) {
        throw new AccessDenied("index " + index + " reads " + what + " (of " + entry
            + "), granted to " + String.join(", ", new TreeSet<>(to)) + " only. Received: user="
            + (analyst.user().isEmpty() ? "(none)" : analyst.user()));
      }
    });
  }

  /** Tells JDBC sessions from the server's own: set by sql_dl's operation manager. */
  public static void jdbcSessions(Predicate<SparkSession> isJdbc) {
    jdbcSessions = isJdbc;
  }

  static AccessPolicy current() {
    return current;
  }

  /** Whether a policy is in force. */
  public static boolean installed() {
    return current != null;
  }

  /** A user name as the policy, {@code current_user()} and the audit log see it: trimmed and
   *  in lower case (LDAP compares uids ignoring case and surrounding blanks). */
  public static String canonical(String user) {
    return user == null ? null : user.strip().toLowerCase(Locale.ROOT);
  }

  /**
   * Before a JDBC operation of {@code hiveSession} runs in {@code session}: makes the
   * session's user name canonical, puts its jobs in the user's {@link #pool} and, for an
   * analyst, puts back every setting analysts may
   * not change back to the value a new session starts with, the server's: a client can
   * change them as the session opens (JDBC URL and connection properties reach Spark's
   * session settings without a SET statement).
   */
  public static void prepare(HiveSession hiveSession, SparkSession session) {
    AccessPolicy policy = current;
    if (policy == null) {
      return;
    }
    String user = canonical(hiveSession.getUserName());
    if (!Objects.equals(user, hiveSession.getUserName())) {
      rename(hiveSession, user);
    }
    if (policy.analyst(user == null ? "" : user) != null) {
      policy.restoreSettings(session);
    }
    session.sessionState().conf().setConfString(POOL, pool(user));
  }

  /** The FAIR scheduler pool of a user's statements: one per user, so that one user's heavy
   *  query does not hold every core while another's waits (Spark creates a pool the first
   *  time a job names it, with weight 1). */
  public static String pool(String user) {
    return "user_" + (user == null || user.isEmpty() ? "(none)" : user);
  }

  /** Sets the user name of a Hive session, which Hive wraps in a proxy (HiveSessionProxy). */
  private static void rename(HiveSession hiveSession, String user) {
    try {
      Object session = hiveSession;
      if (Proxy.isProxyClass(session.getClass())) {
        Object handler = Proxy.getInvocationHandler(session);
        Field base = handler.getClass().getDeclaredField("base");
        base.setAccessible(true);
        session = base.get(handler);
      }
      Field name = HiveSessionImpl.class.getDeclaredField("username");
      name.setAccessible(true);
      name.set(session, user);
    } catch (ReflectiveOperationException | ClassCastException | IllegalArgumentException e) {
      throw new IllegalStateException("cannot make the session's user name canonical", e);
    }
  }

  private void restoreSettings(SparkSession session) {
    SQLConf conf = session.sessionState().conf();
    Map<String, String> set = CollectionConverters.asJava(conf.getAllConfs());
    Map<String, String> initial = new HashMap<>();
    for (scala.Tuple2<String, String> entry : session.sparkContext().conf().getAll()) {
      initial.put(entry._1(), entry._2());
    }
    for (String key : set.keySet()) {
      if (settable.contains(key) || Objects.equals(set.get(key), initial.get(key))) {
        continue;
      }
      if (initial.containsKey(key)) {
        conf.setConfString(key, initial.get(key));
      } else {
        conf.unsetConf(key);
      }
    }
  }

  /** The analyst running the current statement in {@code session}, or null when it is not
   *  restricted: the server's own work, or an admin's. */
  Analyst analystIn(SparkSession session) {
    if (SERVER_WORK.get()) {
      return null;
    }
    String user = CurrentUserContext.CURRENT_USER().get();
    if (user == null && !jdbcSessions.test(session)) {
      return null;
    }
    return analyst(user == null ? "" : canonical(user));
  }

  private Analyst analyst(String user) {
    Set<String> principals = new LinkedHashSet<>();
    principals.add(user);
    if (groups != null && !user.isEmpty()) {
      for (String group : groups.groupsOf(user)) {
        principals.add("group:" + group);
      }
    }
    return Collections.disjoint(admins, principals) ? new Analyst(user, principals) : null;
  }

  /** The entry (model, preprocessor, image view) a sql_dl function belongs to: {@code ""}
   *  for sql_dl's built-in functions, null when it is not one of sql_dl's. */
  String functionEntry(String function) {
    return functions.get(lower(function));
  }

  /** The same for a view of the default database: {@code ""} for the system views. */
  String viewEntry(String view) {
    return views.get(lower(view));
  }

  /** Who {@code entry} is granted to, or null when it is open to every analyst. */
  Set<String> grantees(String entry) {
    return entry == null || entry.isEmpty() ? null : grants.get(lower(entry));
  }

  /**
   * How the rows of a system view are kept to what {@code analyst} may use: the view's column
   * that names a function, model or view, and the names of that kind it may show (lower
   * case); null when {@code view} is not such a system view.
   */
  Map.Entry<String, Set<String>> visibleRows(String view, Analyst analyst) {
    List<String> columnAndKind = rows.get(lower(view));
    if (columnAndKind == null) {
      return null;
    }
    Set<String> names = new TreeSet<>();
    switch (columnAndKind.get(1)) {
      case "function" -> functions.forEach((name, entry) -> {
        if (visible(entry, analyst)) {
          names.add(name);
        }
      });
      case "model" -> functions.values().forEach(entry -> {
        if (!entry.isEmpty() && visible(entry, analyst)) {
          names.add(lower(entry));
        }
      });
      case "view" -> views.forEach((name, entry) -> {
        if (visible(entry, analyst)) {
          names.add(name);
        }
      });
      case "index" -> indexes.forEach((name, uses) -> {
        if (uses.values().stream().allMatch(entry -> visible(entry, analyst))) {
          names.add(name);
        }
      });
      default -> throw new IllegalStateException("no such kind: " + columnAndKind.get(1));
    }
    return Map.entry(columnAndKind.get(0), names);
  }

  private boolean visible(String entry, Analyst analyst) {
    Set<String> to = grantees(entry);
    return to == null || !Collections.disjoint(to, analyst.principals());
  }

  boolean settable(String key) {
    return settable.contains(key);
  }

  Set<String> settable() {
    return settable;
  }

  private static String lower(String name) {
    return name.toLowerCase(Locale.ROOT);
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> map(Object value) {
    return value == null ? Map.of() : (Map<String, Object>) value;
  }

  @SuppressWarnings("unchecked")
  private static List<String> strings(Object value) {
    return value == null ? List.of() : (List<String>) value;
  }

  private static Set<String> principals(Object value) {
    Set<String> principals = new HashSet<>();
    for (String principal : strings(value)) {
      principals.add(canonical(principal));
    }
    return principals;
  }

  private static Map<String, String> lowerKeys(Map<String, Object> map) {
    Map<String, String> lowered = new HashMap<>();
    map.forEach((k, v) -> lowered.put(lower(k), v == null ? "" : (String) v));
    return lowered;
  }
}
