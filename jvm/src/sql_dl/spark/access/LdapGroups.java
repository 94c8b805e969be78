package sql_dl.spark.access;

import java.util.HashSet;
import java.util.Hashtable;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;

import javax.naming.Context;
import javax.naming.NamingEnumeration;
import javax.naming.NamingException;
import javax.naming.directory.Attribute;
import javax.naming.directory.DirContext;
import javax.naming.directory.InitialDirContext;
import javax.naming.directory.SearchControls;
import javax.naming.directory.SearchResult;

/**
 * The LDAP groups of a user, from the directory {@code sql-dl serve} authenticates against,
 * for {@code group:NAME} in the manifest's {@code access} section. It reads the HiveServer2
 * LDAP settings the server was started with:
 * <ul>
 *   <li>{@code hive.server2.authentication.ldap.url}, and {@code .binddn}/{@code .bindpw}
 *   when the directory does not allow anonymous searches;</li>
 *   <li>the user's entry: under {@code .baseDN} (or the base of {@code .userDNPattern}),
 *   the entry whose {@code .guidKey} (default {@code uid}) is the user name;</li>
 *   <li>the groups: under the base of {@code .groupDNPattern} ({@code cn=%s,ou=groups,...}),
 *   the entries whose {@code .groupMembershipKey} (default {@code member}) is the user's DN,
 *   or whose {@code memberUid} is the user name (posixGroup); a group's name is its
 *   {@code cn}.</li>
 * </ul>
 * Answers are kept for {@link #TTL_MS}; a directory that cannot be reached gives no group
 * (so a grant to a group is refused, never given, while it is down) and a warning.
 */
final class LdapGroups {

  static final long TTL_MS = 60_000;
  private static final Pattern ATTRIBUTE = Pattern.compile("[A-Za-z][A-Za-z0-9-]*");

  private record Answer(Set<String> groups, long at) {}

  private final String url;
  private final String userBase;
  private final String groupBase;
  private final String guidKey;
  private final String membershipKey;
  private final String bindDn;
  private final String bindPassword;
  private final Map<String, Answer> answers = new ConcurrentHashMap<>();

  LdapGroups(Map<String, String> settings) {
    String prefix = "hive.server2.authentication.ldap.";
    url = settings.get(prefix + "url");
    groupBase = base(settings.get(prefix + "groupDNPattern"));
    String baseDn = settings.get(prefix + "baseDN");
    userBase = baseDn != null && !baseDn.isBlank() ? baseDn
        : base(settings.getOrDefault(prefix + "userDNPattern", "").split(":")[0]);
    guidKey = attribute(settings.getOrDefault(prefix + "guidKey", "uid"));
    membershipKey = attribute(settings.getOrDefault(prefix + "groupMembershipKey", "member"));
    bindDn = settings.get(prefix + "binddn");
    bindPassword = settings.get(prefix + "bindpw");
    if (url == null || groupBase == null || userBase == null) {
      throw new IllegalArgumentException("group grants need " + prefix + "url, " + prefix
          + "groupDNPattern and " + prefix + "baseDN (or .userDNPattern)");
    }
  }

  /** The part of a DN pattern after its first component: {@code cn=%s,ou=groups,dc=x} gives
   *  {@code ou=groups,dc=x}. */
  private static String base(String pattern) {
    if (pattern == null || !pattern.contains("%s")) {
      return null;
    }
    int comma = pattern.indexOf(',', pattern.indexOf("%s"));
    return comma < 0 ? null : pattern.substring(comma + 1).trim();
  }

  private static String attribute(String name) {
    if (!ATTRIBUTE.matcher(name).matches()) {
      throw new IllegalArgumentException("not an LDAP attribute name: " + name);
    }
    return name;
  }

  /** The names (lower-case) of the groups {@code user} belongs to. */
  Set<String> groupsOf(String user) {
    long now = System.currentTimeMillis();
    Answer answer = answers.get(user);
    if (answer == null || now - answer.at() > TTL_MS) {
      answer = new Answer(lookUp(user), now);
      answers.put(user, answer);
    }
    return answer.groups();
  }

  private Set<String> lookUp(String user) {
    Hashtable<String, String> environment = new Hashtable<>();
    environment.put(Context.INITIAL_CONTEXT_FACTORY, "com.sun.jndi.ldap.LdapCtxFactory");
    environment.put(Context.PROVIDER_URL, url);
    environment.put("com.sun.jndi.ldap.connect.timeout", "5000");
    environment.put("com.sun.jndi.ldap.read.timeout", "5000");
    if (bindDn != null && !bindDn.isBlank()) {
      environment.put(Context.SECURITY_AUTHENTICATION, "simple");
      environment.put(Context.SECURITY_PRINCIPAL, bindDn);
      environment.put(Context.SECURITY_CREDENTIALS, bindPassword == null ? "" : bindPassword);
    }
    Set<String> groups = new HashSet<>();
    DirContext directory = null;
    try {
      directory = new InitialDirContext(environment);
      SearchControls controls = new SearchControls();
      controls.setSearchScope(SearchControls.SUBTREE_SCOPE);
      controls.setReturningAttributes(new String[0]);
      String userDn = null;
      NamingEnumeration<SearchResult> users = directory.search(
          userBase, "(" + guidKey + "={0})", new Object[] {user}, controls);
      if (users.hasMore()) {
        userDn = users.next().getNameInNamespace();
      }
      users.close();
      controls.setReturningAttributes(new String[] {"cn"});
      NamingEnumeration<SearchResult> found = directory.search(groupBase,
          "(|(" + membershipKey + "={0})(memberUid={1}))",
          new Object[] {userDn == null ? "" : userDn, user}, controls);
      while (found.hasMore()) {
        Attribute names = found.next().getAttributes().get("cn");
        for (int i = 0; names != null && i < names.size(); i++) {
          groups.add(String.valueOf(names.get(i)).trim().toLowerCase(Locale.ROOT));
        }
      }
      found.close();
    } catch (NamingException e) {
      System.err.println("sql_dl: cannot read the LDAP groups of " + user + " (grants to "
          + "groups are refused until it can): " + e);
    } finally {
      if (directory != null) {
        try {
          directory.close();
        } catch (NamingException ignored) {
          // closing a connection that failed
        }
      }
    }
    return groups;
  }
}
