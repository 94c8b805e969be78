-- Transfer learning and batch scoring in SQL: the seed's sparkdl workflows without Python.
-- After `sql-dl demo`:  sql-dl sql --manifest demo/models.yaml -f sql/features.sql

-- DeepImageFeaturizer: one feature vector per image, kept as a table for clustering or
-- training elsewhere (Spark ML, or any tool that reads Parquet).
CREATE OR REPLACE TEMPORARY VIEW digit_features AS
SELECT path, label, digits_cnn_features(image) AS features
FROM digits;

SELECT label, count(*) AS images, size(first(features)) AS dims
FROM digit_features
GROUP BY label
ORDER BY label;

-- DeepImagePredictor with decodePredictions: the top classes of each image.
SELECT path, digits_cnn_top_k(image, 2) AS top2
FROM digits
WHERE label = '8'
ORDER BY path
LIMIT 5;

-- Where the model is least sure: the smallest winning probabilities.
SELECT path, label, digits_cnn_top_k(image, 1)[0].description AS predicted,
       round(digits_cnn_top_k(image, 1)[0].probability, 3) AS probability
FROM digits
ORDER BY probability
LIMIT 5;
