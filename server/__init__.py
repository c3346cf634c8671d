"""fedrec.server"""
