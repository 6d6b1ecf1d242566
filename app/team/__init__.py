"""Team features: client keys and who is calling, their quotas, the account's free budget,
and one usage record per request."""
