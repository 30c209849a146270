from user_code import spend_ratio as ratio


def spend_ratio(spend, age):
    return ratio(spend, age)
