package sql_dl.spark;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.List;

import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.BinaryType;
import org.apache.spark.sql.types.ByteType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.IntegerType;
import org.apache.spark.sql.types.LongType;
import org.apache.spark.sql.types.NullType;
import org.apache.spark.sql.types.NumericType;
import org.apache.spark.sql.types.ShortType;
import org.apache.spark.sql.types.StringType;
import org.apache.spark.sql.types.StructType;
import scala.Function1;
import scala.collection.immutable.Map;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;

/**
 * A function's builder that checks the number and SQL types of its arguments first: Spark
 * calls a function's builder as it resolves the call, with the arguments resolved, so a
 * wrong call fails at analysis, before any task runs, with one line such as
 * {@code digits_cnn_top_k(image, k): k must be an INT. Received: k STRING 'three'}.
 *
 * <p>A parameter is {@code name:kind}, with {@code ?} after the name when it is optional
 * (only at the end); the kinds are {@code image} (BINARY, STRING or an image STRUCT),
 * {@code tensor} (an ARRAY of numbers, or of such arrays), {@code any}, and {@code int:MIN:MAX} (an integer type;
 * either bound may be empty), whose literal values are checked against the bounds. NULL is
 * accepted everywhere: the function then gives NULL.
 */
public final class CheckedArguments
    implements Function1<Seq<Expression>, Expression>, Serializable {

  private static final long serialVersionUID = 1L;

  /** An error condition of Spark 4.3 whose message is its one parameter, shown as is
   *  ({@code _LEGACY_} conditions get no {@code [CONDITION]} prefix). */
  public static final String CONDITION = "_LEGACY_ERROR_TEMP_1332";

  private record Parameter(String name, boolean optional, String kind, Long min, Long max)
      implements Serializable {}

  private final String function;
  private final List<Parameter> parameters = new ArrayList<>();
  private final Function1<Seq<Expression>, Expression> builder;

  /** {@code builder}, checking the arguments against {@code parameters} (comma-separated,
   *  as the class describes) first. */
  public CheckedArguments(String function, String parameters,
                          Function1<Seq<Expression>, Expression> builder) {
    this.function = function;
    this.builder = builder instanceof CheckedArguments checked ? checked.builder : builder;
    for (String spec : parameters.split(",")) {
      String[] parts = spec.trim().split(":", -1);
      String name = parts[0];
      boolean optional = name.endsWith("?");
      this.parameters.add(new Parameter(optional ? name.substring(0, name.length() - 1) : name,
          optional, parts[1], bound(parts, 2), bound(parts, 3)));
    }
  }

  private static Long bound(String[] parts, int i) {
    return parts.length > i && !parts[i].isEmpty() ? Long.valueOf(parts[i]) : null;
  }

  @Override
  public Expression apply(Seq<Expression> arguments) {
    List<Expression> given = CollectionConverters.asJava(arguments);
    long required = parameters.stream().filter(p -> !p.optional()).count();
    if (given.size() < required || given.size() > parameters.size()) {
      String takes = required == parameters.size() ? String.valueOf(required)
          : required + " or " + parameters.size();
      throw error("takes " + takes + " argument" + (parameters.size() == 1 ? "" : "s")
          + ". Received: " + given.size() + " argument" + (given.size() == 1 ? "" : "s"));
    }
    for (int i = 0; i < given.size(); i++) {
      check(parameters.get(i), given.get(i));
    }
    return builder.apply(arguments);
  }

  /** The function and its parameters, such as {@code f(image, k)}, as errors name it. */
  public String usage() {
    return function + "(" + String.join(", ", parameters.stream().map(Parameter::name)
        .toList()) + ")";
  }

  private void check(Parameter parameter, Expression argument) {
    DataType type = argument.dataType();
    if (type instanceof NullType) {
      return;
    }
    String expected = switch (parameter.kind()) {
      case "image" -> type instanceof BinaryType || type instanceof StringType
          || type instanceof StructType ? null : "a BINARY, STRING or image STRUCT";
      case "tensor" -> numbers(type) ? null : "an ARRAY of numbers (or of such arrays)";
      case "int" -> integral(type) ? outOfBounds(parameter, argument) : "an INT";
      default -> null;
    };
    if (expected != null) {
      throw error(parameter.name() + " must be " + expected + ". Received: "
          + parameter.name() + " " + type.sql() + " " + shown(argument));
    }
  }

  /** An array of numbers, or of such arrays (a tensor of any rank). */
  private static boolean numbers(DataType type) {
    return type instanceof ArrayType array && (array.elementType() instanceof NumericType
        || numbers(array.elementType()));
  }

  private static boolean integral(DataType type) {
    return type instanceof IntegerType || type instanceof LongType || type instanceof ShortType
        || type instanceof ByteType;
  }

  /** What an integer literal outside the parameter's bounds must be, else null. */
  private static String outOfBounds(Parameter parameter, Expression argument) {
    if (!(argument instanceof Literal literal) || literal.value() == null) {
      return null;  // a column's values are checked as they come, in the tasks
    }
    long value = ((Number) literal.value()).longValue();
    Long min = parameter.min();
    Long max = parameter.max();
    if ((min == null || value >= min) && (max == null || value <= max)) {
      return null;
    }
    return max == null ? "an INT of at least " + min
        : min == null ? "an INT of at most " + max : "an INT from " + min + " to " + max;
  }

  /** The argument as the user wrote it: a literal's value, else the expression's SQL. */
  private static String shown(Expression argument) {
    if (argument instanceof Literal literal) {
      return literal.dataType() instanceof StringType
          ? "'" + literal.value() + "'" : String.valueOf(literal.value());
    }
    return argument.sql();
  }

  private RuntimeException error(String what) {
    return unchecked(new AnalysisException(CONDITION,
        new Map.Map1<String, String>("errorMessage", usage() + ": " + what)));
  }

  /** Throws {@code e} (checked in Java's eyes, as Scala's exceptions are not declared). */
  @SuppressWarnings("unchecked")
  public static <E extends Throwable> RuntimeException unchecked(Throwable e) throws E {
    throw (E) e;
  }
}
