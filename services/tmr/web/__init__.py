"""tmr.web"""
