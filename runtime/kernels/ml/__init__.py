"""The ai.onnx.ml domain, as scikit-learn models exported with skl2onnx use it: the tree
ensembles (`trees`, over the flat trees of `forest`), linear models (`linear`), SVMs (`svm`),
the preprocessing ops (`preprocessing`: Scaler, Normalizer, Binarizer, Imputer, OneHotEncoder,
ArrayFeatureExtractor), LabelEncoder (`label_encoder`), CategoryMapper (`category_mapper`) and
ZipMap (`zipmap`).
Importing this package registers them.

String tensors (runtime.dtypes) are supported where the ops define them: string class
labels of the classifiers (Y becomes a string tensor), LabelEncoder's and CategoryMapper's
string keys and values, OneHotEncoder's string categories and ArrayFeatureExtractor's string
X. ZipMap (`zipmap`) turns a classifier's probabilities into a sequence of maps (a list of
dicts, runtime.graph.ValueKind), as skl2onnx exports classifiers by default.

Scores are computed in float64 and rounded once to the output dtype. Where the spec is
silent the kernels follow onnxruntime; where onnxruntime contradicts the spec or itself they
differ from it. The modules' docstrings say where (`transforms`, `trees`, `label_encoder`).
"""

from edgerun.runtime.kernels.ml import (  # noqa: F401  (registration side effects)
    category_mapper,
    label_encoder,
    linear,
    preprocessing,
    svm,
    trees,
    zipmap,
)
