"""Team features: client keys, their quotas, the account's free budget, usage."""
