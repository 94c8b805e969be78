package sql_dl.spark.thrift;

import java.lang.reflect.Field;
import java.net.Socket;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;

import javax.security.sasl.AuthenticationException;

import org.apache.hive.service.Service;
import org.apache.hive.service.auth.AuthenticationProviderFactory;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;
import org.apache.hive.service.cli.session.SessionManager;
import org.apache.hive.service.cli.thrift.ThriftBinaryCLIService;
import org.apache.spark.sql.hive.thriftserver.HiveThriftServer2;
import org.apache.thrift.server.TServer;
import org.apache.thrift.transport.TSocket;
import org.apache.thrift.transport.TTransport;
import org.apache.thrift.transport.TTransportException;
import org.apache.thrift.transport.TTransportFactory;

/**
 * LDAP login for {@code sql-dl serve} (its {@code hive.server2.custom.authentication.class}
 * when the operator asks for LDAP), which records each refused login and throttles repeated
 * failures.
 *
 * <ul>
 *   <li>The password is checked by HiveServer2's own LDAP provider, with the server's LDAP
 *   settings, as with {@code hive.server2.authentication=LDAP}.</li>
 *   <li>Each refusal is kept for the audit log and the server's log ({@link #drain}): the
 *   user name as typed, the client's address, the time, and why.</li>
 *   <li>After {@link #USER_FAILURES} refused logins of one user (canonical name), or
 *   {@link #ADDRESS_FAILURES} from one address, within {@link #WINDOW_MS}, further logins of
 *   that user, or from that address, are refused without asking the directory until the
 *   window has passed, correct password or not.</li>
 * </ul>
 * The client's address comes from {@link #recordAddresses}, which wraps the Thrift server's
 * transport factory: SASL logins happen as a connection's transport opens, before HiveServer2
 * knows the address.
 */
public class AuditedLogin implements PasswdAuthenticationProvider {

  /** A refused login: {@code at} in epoch milliseconds. */
  public record Refused(String user, String client, long at, String why) {}

  public static final int USER_FAILURES = 5;
  public static final int ADDRESS_FAILURES = 20;
  public static final long WINDOW_MS = 60_000;

  private static final ThreadLocal<String> ADDRESS = new ThreadLocal<>();
  private static final ConcurrentLinkedQueue<Refused> REFUSED = new ConcurrentLinkedQueue<>();
  private static final Map<String, Deque<Long>> FAILURES = new ConcurrentHashMap<>();

  @Override
  public void Authenticate(String user, String password) throws AuthenticationException {
    String client = ADDRESS.get() != null ? ADDRESS.get() : SessionManager.getIpAddress();
    String name = user == null ? "" : user.strip().toLowerCase(java.util.Locale.ROOT);
    long now = System.currentTimeMillis();
    String userKey = "user:" + name;
    String addressKey = "address:" + client;
    if (recent(userKey, now) >= USER_FAILURES || recent(addressKey, now) >= ADDRESS_FAILURES) {
      refuse(user, client, now, "throttled: too many failed logins of this user or from this "
          + "address in the last minute", userKey, addressKey);
    }
    try {
      AuthenticationProviderFactory.getAuthenticationProvider(
          AuthenticationProviderFactory.AuthMethods.LDAP).Authenticate(user, password);
    } catch (AuthenticationException e) {
      refuse(user, client, now, "wrong password or unknown user", userKey, addressKey);
    }
    FAILURES.remove(userKey);
  }

  private static void refuse(String user, String client, long now, String why,
                             String... keys) throws AuthenticationException {
    for (String key : keys) {
      Deque<Long> times = FAILURES.computeIfAbsent(key, k -> new ArrayDeque<>());
      synchronized (times) {
        times.addLast(now);
      }
    }
    REFUSED.add(new Refused(user, client, now, why));
    throw new AuthenticationException("Error validating the login");  // the same for all
  }

  /** The failures of {@code key} within the window, forgetting older ones. */
  private static int recent(String key, long now) {
    Deque<Long> times = FAILURES.get(key);
    if (times == null) {
      return 0;
    }
    synchronized (times) {
      while (!times.isEmpty() && now - times.peekFirst() > WINDOW_MS) {
        times.removeFirst();
      }
      return times.size();
    }
  }

  /** The logins refused since the last call, in order. */
  public static Refused[] drain() {
    List<Refused> drained = new ArrayList<>();
    for (Refused refused; (refused = REFUSED.poll()) != null; ) {
      drained.add(refused);
    }
    return drained.toArray(new Refused[0]);
  }

  /**
   * Makes the binary Thrift transport of {@code server}, started, tell logins the address of
   * the connection they are on (the HTTP transport's servlet tells {@link SessionManager}).
   */
  public static void install(HiveThriftServer2 server) throws ReflectiveOperationException,
      InterruptedException {
    for (Service service : server.getServices()) {
      if (service instanceof ThriftBinaryCLIService) {
        Field field = ThriftBinaryCLIService.class.getDeclaredField("server");
        field.setAccessible(true);
        long deadline = System.currentTimeMillis() + 30_000;
        while (field.get(service) == null && System.currentTimeMillis() < deadline) {
          Thread.sleep(50);  // the service creates it in a thread of its own
        }
        TServer thrift = (TServer) field.get(service);
        if (thrift == null) {
          throw new IllegalStateException("the Thrift server did not start");
        }
        Field factory = TServer.class.getDeclaredField("inputTransportFactory_");
        factory.setAccessible(true);
        factory.set(thrift, recordAddresses((TTransportFactory) factory.get(thrift)));
      }
    }
  }

  /** {@code factory}, which also tells logins the address of the connection they are on. */
  public static TTransportFactory recordAddresses(TTransportFactory factory) {
    return new TTransportFactory() {
      @Override
      public TTransport getTransport(TTransport transport) throws TTransportException {
        Socket socket = transport instanceof TSocket ? ((TSocket) transport).getSocket() : null;
        ADDRESS.set(socket == null || socket.getInetAddress() == null ? null
            : socket.getInetAddress().getHostAddress());
        try {
          return factory.getTransport(transport);
        } finally {
          ADDRESS.remove();
        }
      }
    };
  }
}
