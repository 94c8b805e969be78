package sql_dl.spark.access;

import java.lang.ref.WeakReference;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.WeakHashMap;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.catalog.TemporaryViewRelation;
import scala.Option;

/**
 * The temporary views plugin mode registered in each session (the manifest's image views and
 * system views; {@code sql-dl serve} makes persistent views instead). The policy judges such
 * a view as a whole, as it judges the server's persistent views, while an analyst's own
 * temporary view of the same name is judged by what it reads: a view is sql_dl's while the
 * session's definition of that name is the very one sql_dl registered.
 */
public final class PluginViews {

  /** By session, weakly both ways: a view's plan refers to its session, and a strong
   *  reference to it would keep every closed JDBC session alive. */
  private static final Map<SparkSession, Map<String, WeakReference<TemporaryViewRelation>>>
      VIEWS = new WeakHashMap<>();

  private PluginViews() {}

  /** Records the session's temporary view {@code name}, just registered, as sql_dl's. */
  public static synchronized void add(SparkSession session, String name) {
    Option<TemporaryViewRelation> view = catalogView(session, name);
    if (view.isDefined()) {
      VIEWS.computeIfAbsent(session, s -> new HashMap<>())
          .put(key(name), new WeakReference<>(view.get()));
    }
  }

  /** Whether the session's temporary view {@code name} is the one sql_dl registered. */
  static synchronized boolean isOurs(SparkSession session, String name) {
    Map<String, WeakReference<TemporaryViewRelation>> views = VIEWS.get(session);
    WeakReference<TemporaryViewRelation> reference = views == null ? null : views.get(key(name));
    TemporaryViewRelation ours = reference == null ? null : reference.get();
    if (ours == null) {
      return false;
    }
    Option<TemporaryViewRelation> now = catalogView(session, name);
    return now.isDefined() && now.get() == ours;
  }

  private static Option<TemporaryViewRelation> catalogView(SparkSession session, String name) {
    return ((org.apache.spark.sql.classic.SparkSession) session).sessionState().catalog()
        .getRawTempView(name);
  }

  private static String key(String name) {
    return name.toLowerCase(Locale.ROOT);
  }
}
