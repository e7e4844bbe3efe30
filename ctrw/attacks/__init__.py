"""Attacks: ``build.build_attack`` (the factory), one documented builder per attack registered in
``builders``, and our own PGD (``pgd``) and batched DeepFool (``deepfool``) implementations."""
