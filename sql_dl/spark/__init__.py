"""How sql_dl reaches Spark, classic or Connect: the session's backend (`backends`), every
reach past PySpark's public API (`internals`) and the settings of sql_dl's Spark extension
(`extension`). Imports only the shared ground (errors, rules, manifest, staging, paths,
plans).

``spark.sql.extensions=sql_dl.spark.SqlDlExtensions`` names the extension's Java class (in
sql_dl's jar, built from ``jvm/src/sql_dl/spark/``), not this package.
"""
