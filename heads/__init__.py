"""Classical heads (scikit-learn and XGBoost estimators) trained on stored features."""

__all__: list[str] = []
