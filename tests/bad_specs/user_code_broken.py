def spend_ratio(spend, age)
    return spend / age
