"""tmr.replication"""
