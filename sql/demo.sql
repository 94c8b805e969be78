-- sql-dl demo: scikit-learn's handwritten digits, a small CNN, and nothing but SQL.
-- Run by `sql-dl demo`, or after it: sql-dl sql --manifest demo/models.yaml -f sql/demo.sql

-- What sql_dl registered from the manifest.
SELECT function, kind, model, output_size, preprocessor FROM sql_dl_models;

-- The three most probable labels of a few images.
SELECT path, label, digits_cnn_top_k(image, 3) AS top3
FROM digits
ORDER BY path
LIMIT 5;

-- Accuracy per label, computed in SQL.
SELECT label,
       count(*) AS images,
       round(avg(CASE WHEN digits_cnn_top_k(image, 1)[0].description = label THEN 1 ELSE 0 END), 3) AS accuracy
FROM digits
GROUP BY label
ORDER BY label;

-- Feature vectors for transfer learning or clustering: the first values of each.
SELECT label, size(digits_cnn_features(image)) AS dims, slice(digits_cnn_features(image), 1, 4) AS first_features
FROM digits
ORDER BY path
LIMIT 3;

-- The tensor the model receives, from the preprocessor alone.
SELECT label, size(digits_32(image)) AS values, round(array_max(digits_32(image)), 3) AS max_value
FROM digits
ORDER BY path
LIMIT 3;

-- Digits like this one: the nearest digits by their features, from the manifest's index.
SELECT path, label, round(distance, 4) AS distance
FROM digits_like((SELECT min(path) FROM digits WHERE label = '3'), 5);
