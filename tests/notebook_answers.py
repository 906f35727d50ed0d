"""Different but correct answers to notebook 02's exercises, for the solutions-notebook run.

The rest of notebook 02 uses the student's own functions (their head, freezing, compiling,
callbacks, scores). ``tests/test_course.py`` runs the solutions notebook with these answers
in place of the reference ones (through ``tests/alternative_answers.py``, which adds them to
its table): the notebook must still run and pass every test, and each answer must be called
by a later cell, so nothing downstream depends on how the reference happens to be written.
Each answer prints ``KIT-ANSWER-USED <name>`` when called.
"""

from __future__ import annotations

ALTERNATIVE_ANSWERS: dict[str, dict[str, str]] = {
    "02_retrain_simpsons": {
        "build_head": '''
def build_head(feature_shape, n_classes, pooling="avg", dropout=0.2, l2=0.0):
    """Return a keras.Model from a feature map of shape feature_shape to n_classes probabilities."""
    print("KIT-ANSWER-USED build_head")
    poolings = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D,
                "flatten": keras.layers.Flatten}
    if pooling not in poolings:
        raise ValueError(f"unknown pooling {pooling}")
    feature_map = keras.Input(feature_shape, name="feature_map")
    pooled = poolings[pooling](name="pooled")(feature_map)
    dropped = keras.layers.Dropout(rate=dropout, name="dropped")(pooled)
    dense = keras.layers.Dense(n_classes, activation="softmax", name="characters",
                               kernel_regularizer=keras.regularizers.l2(l2) if l2 else None)
    return keras.Model(inputs=feature_map, outputs=dense(dropped), name="my_head")
''',
        "freeze_for_phase": '''
def freeze_for_phase(base, backbone, phase, n_blocks=1):
    """Phase 1: freeze the whole base. Phase 2: unfreeze the last n_blocks blocks, BatchNormalization excepted."""
    print("KIT-ANSWER-USED freeze_for_phase")
    base.trainable = phase != 1
    if phase == 1:
        return None
    last = []
    for block in backbones.blocks(base, backbone)[len(backbones.blocks(base, backbone)) - n_blocks:]:
        last.extend(block)
    for layer in base.layers:
        layer.trainable = False
        if layer.name in last and type(layer).__name__ != "BatchNormalization":
            layer.trainable = True
''',
        "compile_with_label_smoothing": '''
def compile_with_label_smoothing(model, learning_rate, label_smoothing=0.0):
    """Compile for one-hot targets: Adam at learning_rate, categorical cross-entropy with label smoothing, accuracy."""
    print("KIT-ANSWER-USED compile_with_label_smoothing")
    adam = keras.optimizers.Adam(learning_rate)
    loss = keras.losses.CategoricalCrossentropy(from_logits=False, label_smoothing=float(label_smoothing))
    model.compile(adam, loss, metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    return model
''',
        "training_callbacks": '''
def training_callbacks(checkpoint_path, log_dir, patience):
    """Early stopping that restores the best epoch, the best checkpoint by val_loss, TensorBoard logs."""
    print("KIT-ANSWER-USED training_callbacks")
    stop = keras.callbacks.EarlyStopping(patience=patience, monitor="val_loss", mode="min", restore_best_weights=True)
    best = keras.callbacks.ModelCheckpoint(filepath=checkpoint_path, save_best_only=True, monitor="val_loss", mode="min")
    logs = keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False)
    return [stop, best, logs]
''',
        "held_out_scores": '''
def held_out_scores(probabilities, y_true):
    """Accuracy of the most probable class on held-out images, with its 95 % interval and the number of images."""
    print("KIT-ANSWER-USED held_out_scores")
    if len(probabilities) == 0:
        raise ValueError("nothing to score")
    right = np.argmax(probabilities, axis=-1) == np.array(y_true)
    accuracy = right.sum() / right.size
    half = 1.96 * np.sqrt(accuracy * (1.0 - accuracy) / right.size)
    low, high = np.clip([accuracy - half, accuracy + half], 0.0, 1.0)
    return dict(accuracy=float(accuracy), images=int(right.size), **{"95% low": float(low), "95% high": float(high)})
''',
        "per_class_accuracy": '''
def per_class_accuracy(y_true, y_pred, class_names):
    """Return a Series: for each class name, the share of its images predicted correctly (NaN if it has none)."""
    print("KIT-ANSWER-USED per_class_accuracy")
    table = pd.DataFrame({"true": np.asarray(y_true), "right": np.asarray(y_true) == np.asarray(y_pred)})
    shares = table.groupby("true")["right"].mean()
    return pd.Series([shares.get(k, np.nan) for k in range(len(class_names))], index=class_names, dtype=float)
''',
        "groups_on_both_sides": '''
def groups_on_both_sides(frame):
    """Return the number of groups whose rows are in more than one split."""
    print("KIT-ANSWER-USED groups_on_both_sides")
    pairs = frame[["group", "split"]].drop_duplicates()
    counts = pairs["group"].value_counts()
    return len(counts[counts > 1])
''',
    },
}


# The functions a later, ungraded cell of notebook 02 must call (tests/alternative_answers.py's check).
USED_DOWNSTREAM_02: list[str] = [
    "build_head", "freeze_for_phase", "compile_with_label_smoothing", "training_callbacks", "held_out_scores",
    "per_class_accuracy", "groups_on_both_sides",
]
