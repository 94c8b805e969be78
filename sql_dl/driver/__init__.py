"""The driver side: checks a manifest's models (`models`), plans and registers its
functions and views (`registration`, `views`, `system_views`, `function_docs`), builds
sessions (`session`), reads counts (`counts`), keeps workers warm (`keep_warm`), trains
(`training`) and publishes models (`publish`). Runs only where the SparkSession is.
"""
