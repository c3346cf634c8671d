"""fedrec.client"""
