"""Stripe payment client of usercredits."""
